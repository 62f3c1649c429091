"""The image index of a re-audit: OLD's sample ids kept, and files unchanged by their stat not read again."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from unhans.pipeline.config import InputConfig
from unhans.pipeline.image_index import build_image_index, following_order
from unhans.pipeline.sources import ImageFileSource, content_hash
from unhans.storage import RunLayout, write_table

HOUR_NS = 3600 * 10**9


def _image(path: Path, value: int, mtime_ns: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((8, 8), value, np.uint8)
    pixels[0, 0] = 255 - value
    Image.fromarray(pixels, mode="L").save(path)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def _earlier_run(folder: Path, run: Path, spec: InputConfig) -> None:
    """An earlier run as far as the index is concerned: its image index and its samples' content hashes."""
    index = pq.read_table(build_image_index(spec, RunLayout(run).image_index))
    root = Path(index.schema.metadata[b"root"].decode())
    keys = index.column("key").to_pylist()
    hashes = [content_hash((root / p).read_bytes()) for p in index.column("path").to_pylist()]
    write_table(run, "samples", pa.table({"sample_id": pa.array(range(len(keys)), pa.int64()), "key": keys,
                                          "content_hash": hashes}))


def test_following_order_keeps_old_positions_fills_gaps_then_appends():
    # d is gone: x takes its position; y comes last
    assert following_order(list("abcde"), list("abxcey")).tolist() == [0, 1, 3, 2, 4, 5]
    # more gone than new: e, past the new end, moves into b's gap; c keeps its id
    assert following_order(list("abcde"), list("ace")).tolist() == [0, 2, 1]
    assert following_order(list("abcdef"), list("axf")).tolist() == [0, 1, 2]  # x fills b's gap, f moves into c's
    assert following_order([], list("ba")).tolist() == [0, 1]
    assert following_order(list("ab"), list("ab")).tolist() == [0, 1]


@pytest.fixture
def folder(tmp_path):
    past = time.time_ns() - HOUR_NS
    for label in range(2):
        for i in range(3):
            _image(tmp_path / "data" / f"c{label}" / f"{i}.png", 10 * i + 100 * label, past)
    return tmp_path / "data"


def test_a_grown_folder_keeps_the_earlier_ids_and_knows_the_unchanged_hashes(folder, tmp_path):
    spec = InputConfig(kind="imagefolder", path=str(folder))
    _earlier_run(folder, tmp_path / "old", spec)
    old = pq.read_table(RunLayout(tmp_path / "old").image_index)
    _image(folder / "c0" / "-new.png", 77)  # sorts first in class 0: canonical order would shift every id
    index = pq.read_table(build_image_index(spec, tmp_path / "index.parquet", tmp_path / "old", keep_ids=True))
    keys = index.column("key").to_pylist()
    assert keys[:6] == old.column("key").to_pylist() and keys[6] == "c0/-new.png"
    assert index.column("label").to_pylist() == [0, 0, 0, 1, 1, 1, 0]
    known = index.column("content_hash").to_pylist()
    assert known[6] is None  # new: the explain stage reads it
    assert known[:6] == [content_hash((folder / k).read_bytes()) for k in keys[:6]]
    source = ImageFileSource(spec, tmp_path / "index.parquet")
    assert source.identities(0, 7)[2] == [content_hash((folder / k).read_bytes()) for k in keys]
    # the old files are the old run's samples 0-5, unchanged under the same ids: a re-audit links their units unread
    assert index.column("earlier_id").to_pylist() == [0, 1, 2, 3, 4, 5, -1]
    assert source.keeps_ids_of(tmp_path / "old") and source.unchanged_ids(tmp_path / "old", 0, 7).tolist() == [
        0, 1, 2, 3, 4, 5, -1]
    assert source.unchanged_ids(tmp_path / "other", 0, 7) is None  # known of that run only
    # without keep_ids: the canonical (ImageFolder) order; the old ids still say which old sample each file is
    canonical = pq.read_table(build_image_index(spec, tmp_path / "canonical.parquet", tmp_path / "old"))
    assert canonical.column("key").to_pylist()[0] == "c0/-new.png"
    assert canonical.column("earlier_id").to_pylist() == [-1, 0, 1, 2, 3, 4, 5]
    assert not ImageFileSource(spec, tmp_path / "canonical.parquet").keeps_ids_of(tmp_path / "old")


def test_a_shrunk_folder_moves_only_its_last_sample_and_no_longer_claims_the_old_ids(folder, tmp_path):
    spec = InputConfig(kind="imagefolder", path=str(folder))
    _earlier_run(folder, tmp_path / "old", spec)
    (folder / "c0" / "1.png").unlink()  # id 1 is free; the last sample (c1/2.png, id 5) must move into it
    index = pq.read_table(build_image_index(spec, tmp_path / "index.parquet", tmp_path / "old", keep_ids=True))
    assert index.column("key").to_pylist() == ["c0/0.png", "c1/2.png", "c0/2.png", "c1/0.png", "c1/1.png"]
    assert index.column("earlier_id").to_pylist() == [0, 5, 2, 3, 4]
    source = ImageFileSource(spec, tmp_path / "index.parquet")
    # a key of the old run now sits at another id: a re-audit must look the samples up by key
    assert not source.keeps_ids_of(tmp_path / "old")
    assert source.unchanged_ids(tmp_path / "old", 0, 5).tolist() == [0, 5, 2, 3, 4]


def test_a_relabeled_or_moved_file_keeps_its_known_hash_but_not_its_old_id(folder, tmp_path):
    """A Parquet list whose row for an unchanged file now gives another label, or the same key another path."""
    rows = {"path": ["c0/0.png", "c0/1.png", "c1/0.png"], "key": ["a", "b", "c"], "label": [0, 0, 1]}
    pq.write_table(pa.table(rows), folder / "list.parquet")
    spec = InputConfig(kind="parquet", path=str(folder / "list.parquet"))
    _earlier_run(folder, tmp_path / "old", spec)
    rows["label"][1] = 1  # relabeled
    rows["path"][2] = "c1/1.png"  # key c now names another file
    os.utime(folder / "c1" / "1.png", ns=((folder / "c1" / "0.png").stat().st_mtime_ns,) * 2)
    pq.write_table(pa.table(rows), folder / "list.parquet")
    index = pq.read_table(build_image_index(spec, tmp_path / "index.parquet", tmp_path / "old", keep_ids=True))
    assert index.column("earlier_id").to_pylist() == [0, -1, -1]
    # the relabeled file's content is known; the key that names another file (of the same mtime) is read again
    assert index.column("content_hash").to_pylist() == [content_hash((folder / p).read_bytes())
                                                        for p in rows["path"][:2]] + [None]


def test_the_quick_check_trusts_only_old_unchanged_stats_and_rehash_turns_it_off(folder, tmp_path):
    spec = InputConfig(kind="imagefolder", path=str(folder))
    _image(folder / "c1" / "2.png", 70)  # written just before the earlier listing: racy, never trusted by its stat
    _earlier_run(folder, tmp_path / "old", spec)
    stat = (folder / "c0" / "0.png").stat()
    data = bytearray((folder / "c0" / "0.png").read_bytes())
    data[-20] ^= 1  # other bytes, the same size, its old mtime put back
    (folder / "c0" / "0.png").write_bytes(bytes(data))
    os.utime(folder / "c0" / "0.png", ns=(stat.st_mtime_ns, stat.st_mtime_ns))
    _image(folder / "c0" / "1.png", 60)  # rewritten now: a new mtime
    (folder / "c1" / "1.png").unlink()
    index = pq.read_table(build_image_index(spec, tmp_path / "index.parquet", tmp_path / "old"))
    known = dict(zip(index.column("key").to_pylist(), index.column("content_hash").to_pylist()))
    # a same-size rewrite with its mtime restored is trusted (the quick check's one blind spot, as rsync's) ...
    assert known["c0/0.png"] is not None and known["c0/0.png"] != content_hash((folder / "c0" / "0.png").read_bytes())
    assert known["c0/1.png"] is None and known["c1/2.png"] is None  # ... a new mtime or a racy one is not
    assert "c1/1.png" not in known
    assert known["c0/2.png"] == content_hash((folder / "c0" / "2.png").read_bytes())
    # ... and --reuse-rehash reads every file
    rehashed = pq.read_table(build_image_index(spec, tmp_path / "rehash.parquet", tmp_path / "old", trust_stat=False))
    assert rehashed.column("content_hash").null_count == rehashed.num_rows


def test_file_names_equal_pathlib_joins(tmp_path):
    paths = ["a/b.png", "./a.png", "a//b.png", "a/./b.png", "a/../b.png", "../a.png", "a b/c.png", ".h/x.png", "/abs/c.png"]
    pq.write_table(pa.table({"path": paths, "key": paths, "label": [0] * len(paths)},
                            metadata={"root": str(tmp_path)}), tmp_path / "index.parquet")
    source = ImageFileSource.__new__(ImageFileSource)  # the names only: no image needs to exist
    source.root, source.paths = tmp_path, paths
    assert source.file_names(0, len(paths)) == [str(tmp_path / p) for p in paths]
