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
