import json

import numpy as np
import pyarrow as pa
import pytest

from unhans.storage import (
    Markers, RunMismatchError, create_heatmap_array, init_run, normalize_for_storage, open_run, read_table,
    write_part,
)


def test_manifest_records_schema_config_and_versions(tmp_path):
    init_run(tmp_path / "run", {"a": 1})
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["config"] == {"a": 1}
    assert "torch" in manifest["versions"] and "zarr" in manifest["versions"]


def test_reopening_with_another_config_names_the_differing_keys(tmp_path):
    init_run(tmp_path, {"dataset": {"seed": 0, "name": "digits"}})
    init_run(tmp_path, {"dataset": {"seed": 0, "name": "digits"}})  # same config reopens fine
    with pytest.raises(RunMismatchError, match=r"dataset\.seed"):
        init_run(tmp_path, {"dataset": {"seed": 1, "name": "digits"}})


def test_heatmaps_are_zarr_v3_sharded_per_unit_and_round_trip_through_the_scale(tmp_path):
    init_run(tmp_path, {})
    array = create_heatmap_array(tmp_path, 100, (1, 8, 8), shard_size=32)
    assert array.metadata.zarr_format == 3 and array.shards == (32, 1, 8, 8) and array.chunks[0] <= 32
    rng = np.random.default_rng(0)
    relevance = rng.normal(size=(32, 1, 8, 8)).astype(np.float32) * 1e-6
    stored, scale = normalize_for_storage(relevance)
    array[32:64] = stored.astype(np.float16)
    back = np.asarray(open_run(tmp_path).heatmaps[32:64], dtype=np.float32) * scale[:, None, None, None]
    # float16 of values in [-1, 1] keeps ~3 significant digits; the sum survives
    np.testing.assert_allclose(back.reshape(32, -1).sum(1), relevance.reshape(32, -1).sum(1), rtol=0.01, atol=2e-8)
    # untouched shards read as the fill value
    assert not np.asarray(array[0:32]).any()
    # readable by another tool: dask sees the same values
    assert np.allclose(open_run(tmp_path).heatmaps_dask()[32:64].compute(), stored.astype(np.float16))


def test_heatmap_array_with_another_layout_is_refused(tmp_path):
    create_heatmap_array(tmp_path, 100, (1, 8, 8), shard_size=32)
    with pytest.raises(ValueError, match="existing heatmap array"):
        create_heatmap_array(tmp_path, 100, (1, 8, 8), shard_size=64)


def test_a_rewritten_part_replaces_its_rows_instead_of_duplicating(tmp_path):
    write_part(tmp_path, "samples", 0, pa.table({"sample_id": [0, 1]}))
    write_part(tmp_path, "samples", 1, pa.table({"sample_id": [2, 3]}))
    write_part(tmp_path, "samples", 1, pa.table({"sample_id": [2, 3]}))
    assert read_table(tmp_path, "samples").column("sample_id").to_pylist() == [0, 1, 2, 3]


def test_markers_track_stages_and_units(tmp_path):
    markers = Markers(tmp_path)
    assert not markers.stage_done("explain")
    markers.mark_unit("explain", 3, start=768)
    markers.mark_unit("explain", 0)
    assert markers.done_units("explain") == {0, 3}
    markers.mark_stage("explain", seconds=1.5)
    assert markers.stage_done("explain") and markers.stage_info("explain")["seconds"] == 1.5
    markers.clear_stage("explain")
    assert not markers.stage_done("explain") and markers.done_units("explain") == set()


def test_open_run_on_a_plain_directory_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an unhans run directory"):
        open_run(tmp_path)


def test_relevance_reader_applies_each_samples_scale(tmp_path):
    from unhans.storage import Relevance, open_heatmap_array, write_table

    init_run(tmp_path, {})
    rng = np.random.default_rng(0)
    relevance = rng.normal(size=(10, 1, 4, 4)).astype(np.float32) * np.logspace(-6, 2, 10)[:, None, None, None]
    stored, scale = normalize_for_storage(relevance)
    create_heatmap_array(tmp_path, 10, (1, 4, 4), shard_size=4, dtype="float32")
    open_heatmap_array(tmp_path, mode="r+")[:] = stored
    write_table(tmp_path, "samples", pa.table({"sample_id": np.arange(10), "scale": scale.astype(np.float32)}))
    reader = Relevance(tmp_path)
    np.testing.assert_allclose(reader.take(np.array([2, 7])), relevance[[2, 7]], rtol=1e-5)
    np.testing.assert_allclose(reader.one(9), relevance[9], rtol=1e-5)
    pieces = [(start, stop, maps) for start, stop, maps in reader.shards()]
    assert [(a, b) for a, b, _ in pieces] == [(0, 4), (4, 8), (8, 10)]
    np.testing.assert_allclose(np.concatenate([m for *_, m in pieces]), relevance, rtol=1e-5)
    ranged = list(reader.shards(4, 9))  # a range of whole shards, cut at its end
    assert [(a, b) for a, b, _ in ranged] == [(4, 8), (8, 9)]
    np.testing.assert_allclose(np.concatenate([m for *_, m in ranged]), relevance[4:9], rtol=1e-5)
    with pytest.raises(ValueError, match="shard boundary"):
        next(reader.shards(3, 9))


def test_the_layout_names_every_file_the_stages_write(tmp_path):
    from unhans.storage import RunLayout

    layout = RunLayout(tmp_path)
    assert layout.summary == tmp_path / "summary.json" and layout.spray == tmp_path / "spray.json"
    assert layout.table("flags") == tmp_path / "tables" / "flags" and layout.image_index.parent == tmp_path / "inputs"


def test_atomic_writes_leave_the_old_file_when_writing_fails(tmp_path):
    from unhans.storage.atomic import write_atomic, write_bytes_atomic

    target = tmp_path / "a.bin"
    write_bytes_atomic(target, b"old")

    def fails_midway(fh):
        fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, fails_midway)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_parquet_parts_go_through_the_durable_writer(tmp_path, monkeypatch):
    import os

    from unhans.storage import atomic

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    write_part(tmp_path, "samples", 0, pa.table({"sample_id": [0, 1]}))
    assert len(synced) >= 2  # the file and its directory
    assert read_table(tmp_path, "samples").num_rows == 2


def test_where_the_work_runs_may_change_between_reruns(tmp_path):
    init_run(tmp_path, {"cluster": {"workers": 2}, "spray": {"seed": 0}})
    init_run(tmp_path, {"cluster": {"workers": 1, "scheduler": "tcp://x:8786"}, "spray": {"seed": 0}})
    with pytest.raises(RunMismatchError, match=r"spray\.seed"):
        init_run(tmp_path, {"cluster": {"workers": 1}, "spray": {"seed": 1}})


def test_class_maps_return_one_class_from_every_part_in_sample_order(tmp_path):
    from unhans.storage import ClassMaps, class_maps_parts_done, remove_class_maps, write_class_maps_part

    rng = np.random.default_rng(0)
    classes = rng.integers(0, 5, 40)
    maps = rng.normal(size=(40, 4, 4)).astype(np.float32)
    write_class_maps_part(tmp_path, 0, np.arange(0, 20), classes[:20], maps[:20], share_sum=np.ones((4, 4)))
    write_class_maps_part(tmp_path, 1, np.arange(20, 40), classes[20:], maps[20:], share_sum=np.ones((4, 4)))
    assert class_maps_parts_done(tmp_path) == {0, 1}
    for c in range(5):
        ids, got = ClassMaps(tmp_path).read(c)
        np.testing.assert_array_equal(ids, np.flatnonzero(classes == c))
        np.testing.assert_array_equal(got, maps[classes == c])
    with pytest.raises(KeyError, match="class 7"):
        ClassMaps(tmp_path).read(7)
    remove_class_maps(tmp_path)
    assert class_maps_parts_done(tmp_path) == set()
