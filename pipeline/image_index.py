"""The run's list of a user's image files: which files, in which order, and which are unchanged since an earlier run.

:func:`build_image_index` lists an image folder (or validates a Parquet list of image files)
into ``RUN/inputs/image_index.parquet`` once, on the client, so that workers never walk the
directory tree. Columns: ``path`` (relative to the root in the metadata), ``key``, ``label``,
``size`` and ``mtime_ns`` (the file's, when it was listed; -1 for a file that cannot be
stat'ed), ``content_hash`` and ``earlier_id`` (null and -1 unless the file is known unchanged
without reading it, below). The metadata holds the root, the class folder names, ``listed_ns``
(when the listing was made), ``earlier`` (the earlier run it was compared with) and ``ids_from``
(the earlier run whose ids the order kept, below).

**Order.** Without an earlier run the order is the canonical one of
:mod:`unhans.pipeline.sources` (torchvision's ImageFolder order; the Parquet list's row order).
A re-audit (``--reuse OLD``) may instead *keep OLD's ids* (:func:`following_order`): every
sample OLD also listed keeps its position, new samples fill the positions of samples that are
gone, the rest are appended in canonical order. When more samples are gone than came, the
samples past the new end move into the remaining gaps; ``ids_from`` (OLD, set when every kept
sample has its old id) is then not set, and the explain stage looks the moved ones up by key. A dataset that grew overnight then changes only
its last units, and the explain stage hard-links every other unit's files from OLD instead of
rewriting them (:mod:`unhans.pipeline.stages.explain_reuse`). The audit keeps the canonical
order when a recorded trajectory is given: the user's training loop numbered the samples that way.

**Unchanged files** (the quick check of rsync and git): a file whose key, path under the same root,
size and modification time are what OLD's index recorded takes OLD's content hash instead of being
read again, and, when its label is OLD's too, OLD's id of it as ``earlier_id`` (the
explain stage then takes OLD's explanation of it without reading anything of that sample), unless
its modification time was within :data:`RACY_NS` of OLD's listing (a write in the same clock tick
could have followed unseen; such a file is read and hashed, as git does with "racily clean"
entries). ``--reuse-rehash`` turns the quick check off.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from .config import InputConfig
from .sources import SourceError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: files modified this close to (or after) the earlier listing are hashed again, never trusted by their stat
RACY_NS = 1_000_000_000


def build_image_index(spec: InputConfig, out: Path, earlier: Path | None = None, *, keep_ids: bool = False,
                      trust_stat: bool = True) -> Path:
    """List ``spec``'s image files into ``out`` (module docstring); returns ``out``.

    ``earlier``: an earlier run directory. With ``keep_ids`` its samples keep their positions; with
    ``trust_stat`` files unchanged by their stat take its content hashes. An ImageFolder class folder
    without any image raises :class:`SourceError` naming it: torchvision's ImageFolder refuses it too,
    and a silently missing class would shift every later class index.
    """
    import pyarrow as pa

    from unhans.storage.atomic import write_parquet_atomic

    columns, metadata = _listing(spec)
    root = Path(metadata["root"])
    listed_ns = time.time_ns()
    sizes, mtimes = _stats(root, columns["path"])
    n = len(columns["path"])
    table = pa.table({"path": pa.array(columns["path"], pa.string()), "key": pa.array(columns["key"], pa.string()),
                      "label": pa.array(columns["label"], pa.int64()), "size": pa.array(sizes, pa.int64()),
                      "mtime_ns": pa.array(mtimes, pa.int64()), "content_hash": pa.nulls(n, pa.string()),
                      "earlier_id": pa.array(np.full(n, -1, np.int64))})
    old = _earlier_index(earlier) if earlier is not None else None
    if old is not None:
        metadata["earlier"] = str(Path(earlier).resolve())
        if keep_ids:
            old_keys, new_keys = old.column("key"), table.column("key")
            table = table.take(pa.array(following_order(old_keys, new_keys), pa.int64()))
            if not _any_moved(old_keys, new_keys):
                metadata["ids_from"] = str(Path(earlier).resolve())
        if trust_stat:
            table = _with_known_hashes(table, old, Path(earlier), metadata["root"])
    metadata["listed_ns"] = str(listed_ns)
    write_parquet_atomic(out, table.replace_schema_metadata(metadata))
    return out


def following_order(old_keys, new_keys) -> np.ndarray:
    """Positions into ``new_keys`` in the order that keeps ``old_keys``' ids: a key both have keeps its old position,
    a new key fills the position of an old key that is gone (in ``new_keys`` order), the rest are appended. When
    more keys are gone than came, the kept keys past the new end move into the remaining gaps (in their order): as
    few samples as possible change their id. Keys: lists or Arrow string arrays (vectorized: ~0.2 s at 10⁶)."""
    import pyarrow.compute as pc

    old_keys, new_keys = _strings(old_keys), _strings(new_keys)
    total = len(new_keys)
    slots = pc.fill_null(pc.index_in(old_keys, value_set=new_keys), -1).to_numpy().astype(np.int64)
    kept = np.zeros(total, bool)
    kept[slots[slots >= 0]] = True
    past_end = slots[total:]
    fill = np.concatenate([np.flatnonzero(~kept), past_end[past_end >= 0]])  # new keys first, then the displaced
    order = slots[:total].copy()
    gaps = np.flatnonzero(order < 0)
    order[gaps] = fill[:len(gaps)]
    return np.concatenate([order, fill[len(gaps):]]).astype(np.int64)


def _any_moved(old_keys, new_keys) -> bool:
    """Whether :func:`following_order` moves a sample OLD also had: only a kept key past the new end ever moves."""
    import pyarrow.compute as pc

    past_end = _strings(old_keys)[len(new_keys):]
    return bool(len(past_end)) and pc.any(pc.is_in(past_end, value_set=_strings(new_keys))).as_py()


def _strings(keys):
    """``keys`` (a list, an Arrow array or column) as one Arrow string array."""
    import pyarrow as pa

    if isinstance(keys, pa.ChunkedArray):
        return keys.combine_chunks()
    return keys if isinstance(keys, pa.Array) else pa.array(keys, pa.string())


def _listing(spec: InputConfig) -> tuple[dict, dict]:
    """({path, key, label}, metadata) in canonical order, checked."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if spec.kind == "imagefolder":
        root = Path(spec.path)
        if not root.is_dir():
            raise SourceError(f"input.path: not a directory: {root}")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not classes:
            raise SourceError(f"input.path: {root} has no class sub-folders (expected {root}/<class>/<image>)")
        paths, labels = [], []
        for label, name in enumerate(classes):
            found = sorted(str(f.relative_to(root)) for f in (root / name).rglob("*")
                           if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise SourceError(f"input.path: class folder {root / name} holds no image "
                                  f"({', '.join(IMAGE_EXTENSIONS)}); remove it or add its images")
            paths += found
            labels += [label] * len(found)
        return ({"path": paths, "key": paths, "label": labels},
                {"root": str(root.resolve()), "classes": json.dumps(classes)})
    path = Path(spec.path)
    if not path.is_file():
        raise SourceError(f"input.path: file not found: {path}")
    try:
        user = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise SourceError(f"input.path: {path} is not a readable Parquet file ({exc})") from None
    wanted = [spec.path_column, spec.label_column] + ([spec.key_column] if spec.key_column else [])
    missing = [c for c in wanted if c not in user.column_names]
    if missing:
        raise SourceError(f"input: {path} has no column {', '.join(map(repr, missing))} "
                          f"(columns: {', '.join(user.column_names)}; set input.path_column / input.label_column / input.key_column)")
    if user.num_rows == 0:
        raise SourceError(f"input.path: {path} has no rows")
    if not pa.types.is_integer(user.schema.field(spec.label_column).type):
        raise SourceError(f"input.label_column: column {spec.label_column!r} must hold integer labels")
    root = Path(spec.root) if spec.root else path.parent
    paths = user.column(spec.path_column).cast(pa.string())
    keys = user.column(spec.key_column).cast(pa.string()) if spec.key_column else paths
    if keys.null_count or len(set(keys.to_pylist())) != user.num_rows:
        raise SourceError(f"input.{'key_column' if spec.key_column else 'path_column'}: the sample keys of {path} "
                          "must be unique and non-null")
    return ({"path": paths.to_pylist(), "key": keys.to_pylist(), "label": user.column(spec.label_column).to_pylist()},
            {"root": str(root.resolve())})


def _stats(root: Path, paths: list[str]) -> tuple[list[int], list[int]]:
    """(size, mtime_ns) of each file, -1 where it cannot be stat'ed (the explain stage then says why)."""
    sizes, mtimes = [], []
    for rel in paths:
        try:
            st = os.stat(root / rel)
        except (OSError, ValueError):
            sizes.append(-1)
            mtimes.append(-1)
        else:
            sizes.append(st.st_size)
            mtimes.append(st.st_mtime_ns)
    return sizes, mtimes


def _earlier_index(run: Path):
    """The earlier run's image index, when it has one."""
    import pyarrow.parquet as pq

    from unhans.storage import RunLayout

    path = RunLayout(Path(run)).image_index
    if not path.is_file():
        return None
    return pq.read_table(path)


def _with_known_hashes(table, old, run: Path, root: str):
    """``table`` with ``content_hash`` set where the file is unchanged since ``old`` listed it (the same key, path under
    the same root, size and mtime), and ``earlier_id`` where its label is the same too (module docstring). Two Arrow
    joins by key (~1.4 s at 10⁶ files, the samples table's read included)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from unhans.storage import read_table
    from unhans.storage.tables import has_table

    if not has_table(run, "samples") or not {"size", "mtime_ns"} <= set(old.column_names):
        return table  # no hashes, or an index from before stats were recorded
    if (old.schema.metadata or {}).get(b"root", b"").decode() != root:
        return table  # another root: no stat is comparable
    listed = int((old.schema.metadata or {}).get(b"listed_ns", b"0"))
    samples = read_table(run, "samples", columns=["key", "content_hash"])
    was = pa.table({"key": old.column("key"), "old_size": old.column("size"), "old_mtime": old.column("mtime_ns"),
                    "old_path": old.column("path"), "old_label": old.column("label"),
                    "old_id": pa.array(np.arange(old.num_rows), pa.int64())})
    joined = (pa.table({"key": table.column("key"), "row": pa.array(np.arange(table.num_rows), pa.int64())})
              .join(was, "key", join_type="left outer")
              .join(samples.rename_columns(["key", "old_hash"]), "key", join_type="left outer")
              .sort_by("row"))
    size, mtime = table.column("size"), table.column("mtime_ns")
    same = pc.greater_equal(size, 0)
    for check in (pc.equal(joined.column("old_size"), size), pc.equal(joined.column("old_mtime"), mtime),
                  pc.equal(joined.column("old_path"), table.column("path")), pc.less(mtime, listed - RACY_NS),
                  pc.not_equal(joined.column("old_hash"), "missing")):  # a null anywhere (unknown): not the same
        same = pc.and_kleene(same, check)
    same = pc.fill_null(same, False)
    known = pc.if_else(same, joined.column("old_hash"), pa.scalar(None, pa.string()))
    relabeled = pc.fill_null(pc.not_equal(joined.column("old_label"), table.column("label")), True)
    ids = pc.if_else(pc.and_(same, pc.invert(relabeled)), joined.column("old_id"), -1)
    table = table.set_column(table.column_names.index("content_hash"), "content_hash", known.cast(pa.string()))
    return table.set_column(table.column_names.index("earlier_id"), "earlier_id", ids.cast(pa.int64()))
