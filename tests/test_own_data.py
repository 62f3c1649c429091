"""A new user's audit, exactly as README "Audit your own data" tells it: an ImageFolder of PNGs,
a model trained in a plain PyTorch loop with the 3-line recorder, then ``unhans audit`` on a
LocalCluster, with and without the recorded trajectory."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

# The user's own model code, importable from the folder they run unhans in.
USER_MODEL = textwrap.dedent("""
    import torch.nn as nn

    def make_net(num_classes=10):
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, num_classes))
""")

# The user's training script: torchvision's ImageFolder, a plain loop, the 3 recorder lines.
USER_TRAINING = textwrap.dedent("""
    import torch, torch.nn.functional as F, torchvision
    from mynet import make_net
    from unhans.spray.dynamics import DynamicsRecorder

    torch.manual_seed(0)
    dataset = torchvision.datasets.ImageFolder("data/train", transform=torchvision.transforms.Compose(
        [torchvision.transforms.Grayscale(), torchvision.transforms.ToTensor()]))
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    y = torch.tensor(dataset.targets)
    model = make_net(num_classes=len(dataset.classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.002)
    recorder = DynamicsRecorder(num_samples=len(dataset), num_classes=len(dataset.classes), store="dynamics")
    for epoch in range(25):
        for ids in torch.randperm(len(dataset)).split(64):   # ids = positions in the ImageFolder
            logits = model(x[ids])
            loss = F.cross_entropy(logits, y[ids])
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            recorder.update(ids, logits.detach(), y[ids])
        recorder.end_epoch()
    recorder.flush()
    torch.save(model.state_dict(), "net.pt")
""")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A user's project folder: data/train/<digit>/<id>.png (the embedded scenario, noisy labels as
    folders), mynet.py, net.pt and dynamics/ from their own training run; ground truth kept aside."""
    from unhans.pipeline.config import DatasetConfig
    from unhans.pipeline.digits import load_digits_dataset

    root = tmp_path_factory.mktemp("project")
    train = load_digits_dataset(DatasetConfig(seed=0)).train
    for i, (image, label) in enumerate(zip(train.images, train.labels)):
        folder = root / "data" / "train" / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0] * 255 + 0.5).astype(np.uint8)).save(folder / f"{i:05d}.png")
    (root / "mynet.py").write_text(USER_MODEL)
    (root / "train.py").write_text(USER_TRAINING)
    result = subprocess.run([sys.executable, "train.py"], cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return root, train


def _audit(root: Path, out: str, *extra: str, data: str = "data/train") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "unhans.pipeline.cli", "audit", "--input", data, "--grayscale",
               "--model", "mynet:make_net", "--checkpoint", "net.pt", "--num-classes", "10",
               "--out", out, "--quiet", *extra]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)


def _truth(root: Path, train, keys: list[str]):
    """Ground truth in the audit's sample order, through the keys (file names hold the original index)."""
    original = np.array([int(Path(k).stem) for k in keys])
    return train.tagged[original], train.flipped[original]


@pytest.fixture(scope="module")
def with_trajectory(project):
    root, _ = project
    result = _audit(root, "runs/with", "--trajectory", "dynamics")
    assert result.returncode == 0, result.stderr
    return root / "runs" / "with", result


@pytest.fixture(scope="module")
def model_only(project):
    """No trajectory, and the input as a Parquet list: every PNG, then a row whose file is missing
    and one whose file is corrupt (both must be quarantined, nothing else lost)."""
    import pyarrow as pa

    root, _ = project
    paths = sorted(str(p.relative_to(root / "data")) for p in (root / "data" / "train").rglob("*.png"))
    labels = [int(Path(p).parent.name) for p in paths]
    (root / "data" / "extra").mkdir()
    (root / "data" / "extra" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    pq.write_table(pa.table({"path": paths + ["train/5/missing.png", "extra/corrupt.png"],
                             "label": labels + [5, 2]}), root / "data" / "list.parquet")
    result = _audit(root, "runs/model-only", data="data/list.parquet")
    assert result.returncode == 0, result.stderr
    return root / "runs" / "model-only", result


def test_sample_ids_follow_torchvision_imagefolder_order_and_keys_are_relative_paths(project, with_trajectory):
    import torchvision

    root, _ = project
    run, _ = with_trajectory
    reference = torchvision.datasets.ImageFolder(root / "data" / "train")
    expected = [str(Path(p).relative_to(root / "data" / "train")) for p, _ in reference.samples]
    for table in ("samples", "dynamics", "spray", "flags"):
        rows = pq.read_table(run / "tables" / table).sort_by("sample_id")
        assert rows.column("sample_id").to_pylist() == list(range(len(expected))), table
        assert rows.column("key").to_pylist() == expected, table
    samples = pq.read_table(run / "tables" / "samples").sort_by("sample_id")
    assert samples.column("label").to_pylist() == reference.targets
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dataset"]["class_names"] == reference.classes


def test_the_audit_with_the_users_trajectory_finds_the_tag_and_the_flipped_labels(project, with_trajectory):
    from sklearn.metrics import roc_auc_score

    root, train = project
    run, result = with_trajectory
    assert (run / "report.html").stat().st_size > 10_000
    summary = json.loads((run / "summary.json").read_text())
    assert "evaluation" not in summary  # ground truth exists only for the embedded default
    assert summary["mislabel"]["evidence"]["source"] == "training dynamics"
    assert summary["mislabel"]["evidence"]["trajectory"] == str((root / "dynamics").resolve())
    assert [row["class_name"] for row in summary["clever_hans"]["class_ranking"][:2]].count("3") == 1
    flags = pq.read_table(run / "tables" / "flags").sort_by("sample_id")
    tagged, flipped = _truth(root, train, flags.column("key").to_pylist())
    assert roc_auc_score(flipped, flags.column("mislabel_score").to_numpy()) > 0.95
    suspects = flags.column("artifact_suspect").to_numpy(zero_copy_only=False)
    assert suspects.any() and tagged[suspects].mean() > 0.8 and suspects[tagged].mean() > 0.8
    assert not (run / "inputs" / "images.npy").exists()  # the dataset is never copied into the run


def test_without_a_trajectory_the_mislabel_evidence_comes_from_the_model(project, model_only):
    from sklearn.metrics import roc_auc_score

    root, train = project
    run, _ = model_only
    summary = json.loads((run / "summary.json").read_text())
    evidence = summary["mislabel"]["evidence"]
    assert evidence["source"] == "the audited model (no trajectory)" and evidence["features"]
    flags = pq.read_table(run / "tables" / "flags").sort_by("sample_id")
    keys = flags.column("key").to_pylist()
    assert flags.num_rows == 1259 and keys[-2:] == ["train/5/missing.png", "extra/corrupt.png"]
    _, flipped = _truth(root, train, keys[:-2])
    assert roc_auc_score(flipped, flags.column("mislabel_score").to_numpy()[:-2]) > 0.9
    report = (run / "report.html").read_text()
    assert "the audited model (no trajectory)" in report


def test_missing_and_corrupt_files_are_quarantined_and_nothing_else_is_lost(model_only):
    run, result = model_only
    samples = pq.read_table(run / "tables" / "samples").sort_by("sample_id")
    assert samples.column("sample_id").to_pylist() == list(range(1259))
    status, errors = samples.column("status").to_pylist(), samples.column("error").to_pylist()
    assert status.count("quarantined") == 2 and status[-2:] == ["quarantined", "quarantined"]
    assert errors[-2].startswith("file not found") and errors[-1].startswith("cannot decode image")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["samples"] == {"total": 1259, "explained": 1257, "quarantined": 2}
    flags = pq.read_table(run / "tables" / "flags").sort_by("sample_id")
    assert not flags.column("mislabel_suspect").to_pylist()[-1] and not flags.column("artifact_suspect").to_pylist()[-1]
    assert "2 sample(s) quarantined" in result.stderr


def test_a_trajectory_of_another_dataset_is_refused_naming_both_counts(project, tmp_path):
    from unhans.spray.dynamics import DynamicsRecorder
    import torch

    root, _ = project
    other = tmp_path / "other"
    recorder = DynamicsRecorder(num_samples=50, num_classes=10, store=other)
    recorder.update(torch.arange(50), torch.zeros(50, 10), torch.zeros(50, dtype=torch.long))
    recorder.end_epoch()
    recorder.flush()
    result = _audit(root, str(tmp_path / "run"), "--trajectory", str(other))
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "50 samples and 10 classes" in line and "1257 samples and 10 classes" in line


def test_a_model_whose_output_size_differs_from_the_classes_is_refused(project, tmp_path):
    root, _ = project
    result = subprocess.run(
        [sys.executable, "-m", "unhans.pipeline.cli", "audit", "--input", "data/train", "--grayscale",
         "--model", "mynet:make_net", "--num-classes", "7", "--out", str(tmp_path / "run"), "--quiet"],
        cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "7 outputs" in result.stderr and "name 10 classes" in result.stderr


def test_input_together_with_dataset_is_refused(project, tmp_path):
    root, _ = project
    config = tmp_path / "both.yaml"
    config.write_text("dataset: {seed: 1}\ninput: {kind: imagefolder, path: data/train}\n"
                      "model: {factory: 'mynet:make_net'}\n")
    result = subprocess.run([sys.executable, "-m", "unhans.pipeline.cli", "audit", str(config), "--out",
                             str(tmp_path / "run")], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "mutually exclusive" in result.stderr
