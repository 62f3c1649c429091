"""``unhans compare``: what changed between two audits, keyed by sample key, with an exit code for nightly jobs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unhans.pipeline import run_audit
from unhans.pipeline.cli import main
from unhans.pipeline.comparison import CompareError, FailOn, compare_runs
from unhans.pipeline.config import from_dict


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The embedded default (tag on class 3) and the same data with the tag on class 5."""
    root = tmp_path_factory.mktemp("compare")
    fast = {"spray": {"umap": False}}
    run_audit(from_dict(fast), root / "tag3", quiet=True)
    run_audit(from_dict({**fast, "dataset": {"artifact": {"class": 5, "fraction": 0.5}}}), root / "tag5", quiet=True)
    return root


def test_a_moved_shortcut_names_the_class_that_appeared_and_the_one_that_disappeared(runs, capsys):
    code = main(["compare", str(runs / "tag3"), str(runs / "tag5"), "--json", str(runs / "c.json"),
                 "--html", str(runs / "c.html")])
    assert code == 1
    result = json.loads((runs / "c.json").read_text())
    assert result["clever_hans"]["appeared"] == ["5"] and result["clever_hans"]["disappeared"] == ["3"]
    assert result["alarms"] == ["new Clever-Hans class(es): 5"]
    # the same tag, now on class 5: matched by its pattern, with no member in common
    (moved,) = [c for c in result["clever_hans"]["candidates"] if c["status"] == "kept"]
    assert moved["class"] == "3" and moved["class_new"] == "5" and moved["members_jaccard"] == 0.0
    assert result["samples"]["added"] == 0 and result["labels_changed"]["count"] == 0
    out = capsys.readouterr().out
    assert "appeared: 5" in out and "disappeared: 3" in out
    page = (runs / "c.html").read_text()
    assert "<script" not in page and "new Clever-Hans class(es): 5" in page
    assert set(result["evaluation"]) == {"old", "new"}


def test_a_run_compared_with_itself_reports_no_change(runs, capsys):
    assert main(["compare", str(runs / "tag3"), str(runs / "tag3")]) == 0
    result = compare_runs(runs / "tag3", runs / "tag3")
    ch = result["clever_hans"]
    assert ch["appeared"] == ch["disappeared"] == [] and result["alarms"] == []
    assert [c["status"] for c in ch["candidates"]] == ["kept"] and ch["candidates"][0]["members_jaccard"] == 1.0
    for counts in (result["samples"], *result["suspects"].values()):
        assert counts["added"] == counts["removed"] == 0
    assert "alarms: none" in capsys.readouterr().out


def test_a_grown_dataset_is_reaudited_incrementally_and_reports_exactly_the_new_images(runs, tmp_path):
    import shutil

    import zarr

    images = np.load(runs / "tag3" / "inputs" / "images.npy")
    labels = np.load(runs / "tag3" / "inputs" / "labels.npy")
    model = {"kind": "factory", "factory": "unhans.pipeline.small_cnn:small_cnn",
             "kwargs": {"in_channels": 1, "num_classes": 10, "image_size": 32},
             "checkpoint": str(runs / "tag3" / "model.pt")}
    grown = images[:450].copy()
    grown[10] = np.flip(grown[10], axis=-1)  # the same key, other content: must be explained again
    relabeled = labels[:450].copy()
    relabeled[20] = (relabeled[20] + 1) % 10  # the same image, another label: its row must not be copied
    for name, x, y in (("small", images[:400], labels[:400]), ("grown", grown, relabeled)):
        np.save(tmp_path / "data_x.npy", x)  # the same files, grown overnight
        np.save(tmp_path / "data_y.npy", y)
        config = {"input": {"kind": "npy", "path": str(tmp_path / "data_x.npy"),
                            "labels_path": str(tmp_path / "data_y.npy")},
                  "model": model, "spray": {"umap": False}, "faithfulness": {"samples": 64},
                  "explain": {"shard_size": 64}}
        run_audit(from_dict(config), tmp_path / name, quiet=True,
                  reuse=tmp_path / "small" if name == "grown" else None)
    info = json.loads((tmp_path / "grown" / "markers" / "explain.done").read_text())
    assert (info["reused_samples"], info["explained_samples"]) == (398, 52)
    old = zarr.open_array(tmp_path / "small" / "heatmaps.zarr", mode="r")[:]
    # units 1-5 (samples 64-383) kept every sample under the same id: their files are OLD's, hard-linked
    linked = [Path(run, "heatmaps.zarr", "c", "1", *["0"] * (old.ndim - 1)) for run in (tmp_path / "small", tmp_path / "grown")]
    assert linked[0].stat().st_ino == linked[1].stat().st_ino
    assert (tmp_path / "grown" / "tables" / "samples" / "part-00000001.parquet").stat().st_nlink == 2
    result = compare_runs(tmp_path / "small", tmp_path / "grown", FailOn.parse("none"))
    shutil.rmtree(tmp_path / "small")  # the re-audit holds copies, not references
    new = zarr.open_array(tmp_path / "grown" / "heatmaps.zarr", mode="r")[:]
    assert result["labels_changed"]["count"] == 1 and result["labels_changed"]["examples"][0]["key"] == "20"
    kept = np.r_[0:10, 11:20, 21:400]
    assert np.array_equal(new[kept], old[kept])  # bit-identical: copied, not recomputed
    assert not np.array_equal(new[10], old[10])
    samples = result["samples"]
    assert (samples["old"], samples["new"], samples["added"], samples["removed"], samples["kept"]) == (400, 450, 50, 0, 400)
    assert samples["added_keys"] == sorted(str(i) for i in range(400, 450))[:20]
    assert result["alarms"] == [] and result["exit_code"] == 0


def test_a_grown_image_folder_keeps_its_ids_and_links_every_unchanged_unit(runs, tmp_path):
    """New images sort first in their class folders; the re-audit keeps OLD's ids, appends the new images, hard-links
    every unit of old samples and reads no unchanged file again."""
    import os
    import time

    import pyarrow.parquet as pq
    import zarr
    from PIL import Image

    from unhans.storage import read_table

    images = np.load(runs / "tag3" / "inputs" / "images.npy")
    labels = np.load(runs / "tag3" / "inputs" / "labels.npy")
    past = time.time_ns() - 3600 * 10**9

    def write(i, name):
        path = tmp_path / "data" / str(int(labels[i])) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.clip(images[i, 0], 0, 1) * 255).astype(np.uint8), mode="L").save(path)
        return path

    for i in range(200):
        os.utime(write(i, f"img_{i:04d}.png"), ns=(past, past))
    config = from_dict({"input": {"kind": "imagefolder", "path": str(tmp_path / "data"), "transform": {"grayscale": True}},
                        "model": {"kind": "factory", "factory": "unhans.pipeline.small_cnn:small_cnn",
                                  "kwargs": {"in_channels": 1, "num_classes": 10, "image_size": 32},
                                  "checkpoint": str(runs / "tag3" / "model.pt")},
                        "spray": {"umap": False}, "faithfulness": {"enabled": False}, "explain": {"shard_size": 32}})
    run_audit(config, tmp_path / "day1", quiet=True)
    for i in range(200, 220):
        write(i, f"a_new_{i:04d}.png")  # sorts before img_*: ImageFolder order would move every later sample
    run_audit(config, tmp_path / "day2", quiet=True, reuse=tmp_path / "day1")
    info = json.loads((tmp_path / "day2" / "markers" / "explain.done").read_text())
    assert (info["reused_samples"], info["explained_samples"]) == (200, 20)
    ids = [dict(zip(*(read_table(tmp_path / day, "samples", columns=["key", "sample_id"]).column(c).to_pylist()
                      for c in ("key", "sample_id")))) for day in ("day1", "day2")]
    assert all(ids[1][key] == i for key, i in ids[0].items())
    assert sorted(i for key, i in ids[1].items() if key not in ids[0]) == list(range(200, 220))
    index = pq.read_table(tmp_path / "day2" / "inputs" / "image_index.parquet")
    assert index.column("content_hash").null_count == 20  # the 200 unchanged files were not read again
    for unit in range(200 // 32):  # units 0-5 hold old samples only: OLD's files, hard-linked
        assert (tmp_path / "day2" / "tables" / "samples" / f"part-{unit:08d}.parquet").stat().st_nlink == 2
    old = zarr.open_array(tmp_path / "day1" / "heatmaps.zarr", mode="r")[:]
    new = zarr.open_array(tmp_path / "day2" / "heatmaps.zarr", mode="r")[:]
    assert np.array_equal(new[:200], old)
    samples = compare_runs(tmp_path / "day1", tmp_path / "day2", FailOn.parse("none"))["samples"]
    assert (samples["added"], samples["removed"], samples["kept"]) == (20, 0, 200)
    # day2's index says it kept day1's ids: its samples are compared with day1's of the same id only
    from unhans.pipeline.sources import ImageFileSource
    from unhans.pipeline.stages.explain_reuse import EarlierRun

    source = ImageFileSource(config.input, tmp_path / "day2" / "inputs" / "image_index.parquet")
    assert source.keeps_ids_of(tmp_path / "day1") and not source.keeps_ids_of(tmp_path / "day2")
    # a source that does not keep day1's ids (a recorded trajectory, a reordered list) finds a moved key by key;
    # one that claims to keep them compares by id alone and finds nothing here
    table = read_table(tmp_path / "day1", "samples", columns=["key", "content_hash", "label"])
    shifted = np.r_[100:200, 0:100]
    keys, hashes, given = ([table.column(c).to_pylist()[i] for i in shifted] for c in ("key", "content_hash", "label"))
    assert np.array_equal(EarlierRun(str(tmp_path / "day1")).match(0, keys, hashes, np.array(given)), shifted)
    assert (EarlierRun(str(tmp_path / "day1"), keeps_ids=True).match(0, keys, hashes, np.array(given)) == -1).all()
    # by id, across day1's end: the old ids match, the ones past it are new
    kept = EarlierRun(str(tmp_path / "day1"), keeps_ids=True).match(150, *(
        [table.column(c).to_pylist()[i] for i in range(150, 200)] + ["new"] * 10 for c in ("key", "content_hash")),
        np.r_[table.column("label").to_numpy()[150:200], np.zeros(10, int)])
    assert np.array_equal(kept, np.r_[150:200, [-1] * 10])
    # a night that removes 25 files: the 25 samples past the new end move into their gaps, found there by key
    gone = [key for key, i in ids[1].items() if 40 <= i < 65]
    for key in gone:
        (tmp_path / "data" / key).unlink()
    run_audit(config, tmp_path / "day3", quiet=True, reuse=tmp_path / "day2")
    info = json.loads((tmp_path / "day3" / "markers" / "explain.done").read_text())
    assert (info["reused_samples"], info["explained_samples"]) == (195, 0)
    assert b"ids_from" not in pq.read_schema(tmp_path / "day3" / "inputs" / "image_index.parquet").metadata
    day2, day3 = (read_table(tmp_path / day, "samples", columns=["key", "sample_id"]) for day in ("day2", "day3"))
    at2, at3 = (dict(zip(t.column("key").to_pylist(), t.column("sample_id").to_pylist())) for t in (day2, day3))
    assert set(at3) == set(at2) - set(gone) and sorted(at3.values()) == list(range(195))
    assert sum(at3[key] != at2[key] for key in at3) == 25
    maps2, maps3 = (zarr.open_array(tmp_path / day / "heatmaps.zarr", mode="r")[:] for day in ("day2", "day3"))
    assert all(np.array_equal(maps3[at3[key]], maps2[at2[key]]) for key in at3)
    for unit in (0, 3, 4, 5):  # untouched units: day2's files, linked unread
        assert all((tmp_path / "day3" / "tables" / table / f"part-{unit:08d}.parquet").stat().st_ino
                   == (tmp_path / "day2" / "tables" / table / f"part-{unit:08d}.parquet").stat().st_ino
                   for table in ("samples", "outputs"))


def test_bad_fail_on_and_unfinished_runs_are_clear_errors(tmp_path):
    with pytest.raises(CompareError, match="unknown condition 'sometimes'"):
        FailOn.parse("new-flag,sometimes")
    assert FailOn.parse("suspects:10%").suspects == pytest.approx(0.1)
    assert FailOn.parse("suspects:10").suspects == pytest.approx(0.1)
    with pytest.raises(CompareError, match="no summary.json"):
        compare_runs(tmp_path, tmp_path)


def test_the_readme_sql_queries_run_on_a_run_with_duckdb(runs):
    import re
    from pathlib import Path

    duckdb = pytest.importorskip("duckdb")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (block,) = re.findall(r"```sql\n(.*?)```", readme, flags=re.S)
    queries = [q.strip() for q in block.replace("RUN", str(runs / "tag3")).split(";") if q.strip()]
    assert len(queries) == 3
    suspects, classes, mislabeled = (duckdb.sql(q).fetchall() for q in queries)
    assert 0 < len(suspects) <= 10 and all(r[0].isdigit() for r in suspects)
    assert [r[2] for r in suspects] == sorted((r[2] for r in suspects), reverse=True)
    # class 3 first: a flipped tagged 3 in another class ties its top score, the suspect count breaks the tie
    assert len(classes) == 10 and classes[0][0] == 3 and sum(r[1] for r in classes) == 1257
    assert len(mislabeled) == 20 and all(r[4] is not None for r in mislabeled)
