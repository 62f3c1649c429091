"""Bad input gets a clear message naming what and where, or a quarantine row (issue #4, item 3)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from unhans.pipeline.config import ConfigError, ExplainRunConfig, from_dict
from unhans.pipeline.explain_command import run_explain
from unhans.pipeline.stages.explain import ExplainJob, LoadedJob, explain_range
from unhans.pipeline.config import ExplainConfig, InputConfig, ModelConfig, TransformConfig
from unhans.pipeline.model_loading import ModelLoadError, build_model
from unhans.pipeline.small_cnn import small_cnn
from unhans.pipeline.image_index import build_image_index
from unhans.pipeline.sources import SourceError, open_source

FACTORY = "unhans.pipeline.small_cnn:small_cnn"


def groupnorm_net():
    """A model with a layer LRP has no rule for (module-level, so it can be named as a factory)."""
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 30 * 30, 2))


def image_net():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4, 2))


def four_d_output():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1))


@pytest.fixture()
def arrays(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.random((20, 3, 32, 32)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 10, 20))
    # fixed weights: whether a huge input overflows depends on them (a draw whose first kernels all sum
    # below 0 passes nothing through the ReLU, and its logits stay finite)
    torch.manual_seed(0)
    torch.save(small_cnn(in_channels=3).state_dict(), tmp_path / "model.pt")
    return tmp_path


def _config(tmp: Path, **overrides) -> ExplainRunConfig:
    data = {"input": {"kind": "npy", "path": str(tmp / "x.npy"), "labels_path": str(tmp / "y.npy")},
            "model": {"kind": "factory", "factory": FACTORY, "checkpoint": str(tmp / "model.pt"),
                      "kwargs": {"in_channels": 3}},
            "cluster": {"workers": 1}}
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        data[section][key] = value
    return from_dict(data, ExplainRunConfig)


def _fails(tmp: Path, error, match: str, **overrides) -> None:
    with pytest.raises(error, match=match):
        run_explain(_config(tmp, **overrides), tmp / "run", quiet=True)
    assert not (tmp / "run" / "heatmaps.zarr").exists()  # failed before any work


# --- config and whole-input errors: fail before any work, naming the key or file --------------

def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"input\.colour"):
        from_dict({"input": {"path": "x", "colour": 1}}, ExplainRunConfig)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"explain\.batch_size: expected an integer"):
        from_dict({"input": {"path": "x"}, "model": {"factory": "a:b"}, "explain": {"batch_size": "big"}},
                  ExplainRunConfig)


def test_missing_input_path_is_required():
    with pytest.raises(ConfigError, match=r"input\.path: required"):
        from_dict({"model": {"factory": "a:b"}}, ExplainRunConfig)


def test_normalization_needs_one_value_per_channel():
    with pytest.raises(ConfigError, match=r"input\.transform\.mean: needs 3 values"):
        from_dict({"input": {"path": "x", "transform": {"mean": [0.5], "std": [0.2]}}, "model": {"factory": "a:b"}},
                  ExplainRunConfig)


def test_missing_input_file(arrays):
    _fails(arrays, SourceError, r"input\.path: file not found", input__path=str(arrays / "nope.npy"))


def test_input_that_is_not_npy(arrays):
    (arrays / "text.npy").write_text("hello")
    _fails(arrays, SourceError, r"not a readable \.npy file", input__path=str(arrays / "text.npy"))


def test_truncated_npy(arrays):
    data = (arrays / "x.npy").read_bytes()
    (arrays / "cut.npy").write_bytes(data[: len(data) // 2])
    _fails(arrays, SourceError, "truncated", input__path=str(arrays / "cut.npy"))


def test_images_of_the_wrong_rank(arrays):
    np.save(arrays / "flat.npy", np.zeros((20, 3072), np.float32))
    _fails(arrays, SourceError, r"images must be \(N, C, L\) or \(N, C, H, W\), got shape \(20, 3072\)",
           input__path=str(arrays / "flat.npy"))


def test_labels_that_do_not_match_the_images(arrays):
    np.save(arrays / "short.npy", np.zeros(7, np.int64))
    _fails(arrays, SourceError, r"labels have shape \(7,\), expected \(20,\)", input__labels_path=str(arrays / "short.npy"))


def test_labels_that_are_not_integers(arrays):
    np.save(arrays / "float.npy", np.zeros(20, np.float32))
    _fails(arrays, SourceError, "labels must be integers", input__labels_path=str(arrays / "float.npy"))


def test_npz_without_the_images_array(arrays):
    np.savez(arrays / "a.npz", pictures=np.zeros((4, 3, 32, 32), np.float32))
    _fails(arrays, SourceError, r"has no array 'images' \(arrays: pictures\)", input__kind="npz",
           input__path=str(arrays / "a.npz"))


def test_image_folder_without_class_folders(arrays):
    (arrays / "flat_folder").mkdir()
    _fails(arrays, SourceError, "has no class sub-folders", input__kind="imagefolder",
           input__path=str(arrays / "flat_folder"))


def test_image_folder_without_images(arrays):
    (arrays / "empty" / "cat").mkdir(parents=True)
    (arrays / "empty" / "cat" / "notes.txt").write_text("no images here")
    _fails(arrays, SourceError, "class folder .*empty/cat holds no image", input__kind="imagefolder",
           input__path=str(arrays / "empty"))


def test_an_empty_class_folder_among_full_ones_is_named(tmp_path):
    """torchvision's ImageFolder refuses it too: a silently missing class would shift later class indices."""
    folder = tmp_path / "images"
    _write_images(folder, 4)
    (folder / "class1b").mkdir()
    spec = InputConfig(kind="imagefolder", path=str(folder))
    with pytest.raises(SourceError, match="class folder .*class1b holds no image"):
        build_image_index(spec, tmp_path / "index.parquet")


def test_parquet_list_without_the_path_column(arrays):
    pq.write_table(pa.table({"file": ["a.png"], "label": [0]}), arrays / "list.parquet")
    _fails(arrays, SourceError, r"has no column 'path'", input__kind="parquet", input__path=str(arrays / "list.parquet"))


def test_factory_that_cannot_be_imported(arrays):
    _fails(arrays, ModelLoadError, r"model\.factory: cannot import 'nowhere\.models:net'", model__factory="nowhere.models:net")


def test_unknown_torchvision_model(arrays):
    _fails(arrays, ModelLoadError, "torchvision has no model 'resnet7'", model__kind="torchvision", model__name="resnet7")


def test_missing_checkpoint(arrays):
    _fails(arrays, ModelLoadError, r"model\.checkpoint: file not found", model__checkpoint=str(arrays / "none.pt"))


def test_corrupt_checkpoint(arrays):
    (arrays / "junk.pt").write_bytes(b"\x00garbage" * 100)
    _fails(arrays, ModelLoadError, "not a readable torch checkpoint", model__checkpoint=str(arrays / "junk.pt"))


def test_checkpoint_with_pickled_code_is_refused_by_default(arrays):
    torch.save({"state_dict": small_cnn(in_channels=3).state_dict(), "extra": Path("x")}, arrays / "pickled.pt")
    _fails(arrays, ModelLoadError, r"refused by the safe loader \(weights_only=True\)",
           model__checkpoint=str(arrays / "pickled.pt"))


def test_checkpoint_of_another_architecture(arrays):
    torch.save(small_cnn(in_channels=1).state_dict(), arrays / "other.pt")
    _fails(arrays, ModelLoadError, r"does not fit the model: .*size mismatch for 0\.weight",
           model__checkpoint=str(arrays / "other.pt"))


def test_model_whose_output_is_not_logits(arrays):
    _fails(arrays, ModelLoadError, r"output must be \(batch, classes\) logits, got \(1, 2, 32, 32\)",
           model__factory="test_bad_input:four_d_output", model__checkpoint=None, model__kwargs=None)


def test_input_shape_the_model_cannot_take(arrays):
    _fails(arrays, ModelLoadError, r"forward on one input of shape \(1, 3, 32, 32\) failed",
           model__factory="test_bad_input:image_net", model__checkpoint=None, model__kwargs=None)


def test_model_with_layers_lrp_cannot_explain_names_them(arrays):
    from unhans.explainers import UnsupportedModelError

    _fails(arrays, UnsupportedModelError, r"1 \(GroupNorm\)", model__factory="test_bad_input:groupnorm_net",
           model__checkpoint=None, model__kwargs=None)


def test_out_that_is_a_file(arrays):
    (arrays / "taken").write_text("")
    with pytest.raises(FileExistsError, match="not a directory"):
        run_explain(_config(arrays), arrays / "taken", quiet=True)


# --- per-sample problems: a quarantine row with a reason, the rest goes on ----------------------

def _write_images(folder: Path, count: int, size: int = 32) -> None:
    rng = np.random.default_rng(1)
    for i in range(count):
        cls = folder / f"class{i % 2}"
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(cls / f"img{i:04d}.jpg")


def _image_source(tmp: Path, folder: Path, **transform) -> "object":
    spec = InputConfig(kind="imagefolder", path=str(folder), transform=TransformConfig(**transform))
    return open_source(spec, build_image_index(spec, tmp / "index.parquet"))


def test_broken_image_files_are_quarantined_with_reasons(tmp_path):
    folder = tmp_path / "images"
    _write_images(folder, 6)
    (folder / "class0" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    good_png = folder / "class1" / "truncated.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8) + 200).save(good_png)
    good_png.write_bytes(good_png.read_bytes()[:60])
    (folder / "class1" / "empty.png").write_bytes(b"")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "class0" / "small.png")
    source = _image_source(tmp_path, folder)
    batch = source.load(0, len(source))
    reasons = {Path(s).name: e for s, e, st in zip(batch.sources, batch.errors, batch.status) if st != "ok"}
    assert set(reasons) == {"corrupt.jpg", "truncated.png", "empty.png", "small.png"}
    assert reasons["corrupt.jpg"].startswith("cannot decode image")
    assert reasons["truncated.png"].startswith("cannot decode image")
    assert reasons["empty.png"].startswith("cannot decode image")
    assert "decodes to shape (3, 20, 20), the dataset's is (3, 32, 32)" in reasons["small.png"]
    assert sum(s == "ok" for s in batch.status) == 6


def test_a_listed_file_that_is_missing_is_quarantined(tmp_path):
    folder = tmp_path / "images"
    _write_images(folder, 3)
    pq.write_table(pa.table({"path": ["class0/img0000.jpg", "class0/gone.jpg"], "label": [0, 1]}),
                   folder / "list.parquet")
    spec = InputConfig(kind="parquet", path=str(folder / "list.parquet"))
    batch = open_source(spec, build_image_index(spec, tmp_path / "index.parquet")).load(0, 2)
    assert batch.status == ["ok", "quarantined"]
    assert batch.errors[1].startswith("file not found") and "gone.jpg" in batch.errors[1]


def test_nan_inf_inputs_and_non_finite_outputs_are_quarantined(arrays):
    x = np.load(arrays / "x.npy")
    x[2, 0, 0, 0] = np.nan
    x[3, 1, 5, 5] = np.inf
    x[4] = 3e38  # finite input whose logits overflow to Inf/NaN
    np.save(arrays / "bad.npy", x)
    job = ExplainJob(run_dir=str(arrays), input=InputConfig(kind="npy", path=str(arrays / "bad.npy"),
                                                            labels_path=str(arrays / "y.npy")),
                     model=ModelConfig(factory=FACTORY, checkpoint=str(arrays / "model.pt"), kwargs={"in_channels": 3}),
                     explain=ExplainConfig(device="cpu"))
    stored, rows, _, _ = explain_range(LoadedJob(job), 0, 8)
    status, errors = rows.column("status").to_pylist(), rows.column("error").to_pylist()
    assert errors[2] == "input contains NaN" and errors[3] == "input contains Inf"
    assert errors[4] in ("model output contains NaN or Inf", "explanation contains NaN or Inf")
    assert status.count("ok") == 5 and np.isfinite(stored.astype(np.float32)).all()
    assert not stored[2:5].any()  # quarantined samples store no heatmap


def test_labels_outside_the_models_classes_are_quarantined_when_explaining_the_label(arrays):
    np.save(arrays / "labels.npy", np.array([0, 12, -3] + [1] * 17))
    job = ExplainJob(run_dir=str(arrays), input=InputConfig(kind="npy", path=str(arrays / "x.npy"),
                                                            labels_path=str(arrays / "labels.npy")),
                     model=ModelConfig(factory=FACTORY, checkpoint=str(arrays / "model.pt"), kwargs={"in_channels": 3}),
                     explain=ExplainConfig(target="label", device="cpu"))
    _, rows, _, _ = explain_range(LoadedJob(job), 0, 4)
    assert rows.column("error").to_pylist()[:3] == ["", "label 12 is outside 0..9", "label -3 is outside 0..9"]


def test_image_folder_with_three_corrupt_jpegs_quarantines_exactly_those(tmp_path):
    folder = tmp_path / "images"
    _write_images(folder, 200)
    corrupt = [folder / "class0" / "bad1.jpg", folder / "class1" / "bad2.jpg", folder / "class1" / "bad3.jpg"]
    for i, path in enumerate(corrupt):
        path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(i, 200)))
    torch.save(small_cnn(in_channels=3, num_classes=2).state_dict(), tmp_path / "model.pt")
    command = [sys.executable, "-m", "unhans.pipeline.cli", "explain", "--input-kind", "imagefolder", "--input", str(folder),
               "--model", FACTORY, "--checkpoint", str(tmp_path / "model.pt"), "--num-classes", "2",
               "--out", str(tmp_path / "run"), "--workers", "1", "--quiet"]
    (tmp_path / "cfg.yaml").write_text("model: {kwargs: {in_channels: 3}}\n")
    result = subprocess.run(command + [str(tmp_path / "cfg.yaml")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stderr
    assert "3 sample(s) quarantined" in result.stderr
    table = pq.read_table(tmp_path / "run" / "tables" / "samples")
    bad = {Path(s).name for s, st in zip(table.column("source").to_pylist(), table.column("status").to_pylist())
           if st != "ok"}
    assert bad == {"bad1.jpg", "bad2.jpg", "bad3.jpg"}
    assert table.num_rows == 203 and sorted(table.column("sample_id").to_pylist()) == list(range(203))
    again = subprocess.run(command + [str(tmp_path / "cfg.yaml"), "--allow-quarantine"], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr


def test_concept_relevance_is_stored_per_sample_and_zero_where_quarantined(arrays):
    import torch

    from unhans.explainers import LRP
    from unhans.pipeline.model_loading import build_model

    x = np.load(arrays / "x.npy")
    x[2, 0, 0, 0] = np.nan
    np.save(arrays / "bad.npy", x)
    model = ModelConfig(factory=FACTORY, checkpoint=str(arrays / "model.pt"), kwargs={"in_channels": 3})
    job = ExplainJob(run_dir=str(arrays), input=InputConfig(kind="npy", path=str(arrays / "bad.npy"),
                                                            labels_path=str(arrays / "y.npy")),
                     model=model, explain=ExplainConfig(device="cpu", concepts=True, batch_size=3))
    _, rows, outputs, _ = explain_range(LoadedJob(job), 0, 6)
    stored = np.asarray(outputs.column("concepts").to_pylist(), np.float32)
    explainer = LRP(build_model(model, "cpu"))
    ok = [0, 1, 3, 4, 5]
    _, expected = explainer.explain_with_concepts(torch.from_numpy(x[ok]).float(), "predicted")
    np.testing.assert_allclose(stored[ok], expected.numpy(), rtol=1e-4, atol=1e-6)
    assert not stored[2].any() and rows.column("status").to_pylist()[2] == "quarantined"
    with pytest.raises(Exception, match="concepts"):
        from unhans.pipeline.config import from_dict
        from_dict({"explain": {"method": "gradient", "concepts": True}})
