"""Incremental re-audit: the explain stage takes what an earlier run already explained.

``unhans audit CONFIG --out NEW --reuse OLD``: a sample of NEW whose ``key`` and content hash
(:meth:`unhans.pipeline.sources.Source.identities`: the file's bytes for image files, the row's
bytes for arrays) and given label equal those of an explained (``ok``) sample of OLD takes OLD's stored heatmap,
``samples`` row and ``outputs`` row, copied into NEW (so NEW stays valid when OLD is deleted);
only new or changed samples are explained. That is sound only when everything else that made
the heatmap is the same, which :func:`reuse_blockers` checks first: the model's fingerprint, the
explainer settings, the input transform, the sample shape and whether penultimate features are
recorded. Any difference means no reuse at all, and the reason is printed.

What it costs. A re-audit decides "unchanged" by every sample's content hash; image files
whose size and modification time are unchanged since OLD listed them take OLD's hash without
being read (:mod:`unhans.pipeline.image_index`). One Dask task takes a *span* of consecutive
units (:func:`spans`). A unit whose files the data stage found unchanged by their stat, each at
OLD's id, path and label (the index's ``earlier_id``), and all explained by OLD, is not read at all: its shard and both
parts are hard-linked from OLD (:class:`~unhans.storage.atomic.DurableFiles`, copied where
linking fails), which leaves NEW valid when OLD is deleted, since no writer here changes a file
in place. The other units' samples are matched against OLD's samples of the same ids (key, hash,
label, status: a few columns of the span's own parts of OLD's ``samples`` table; OLD's whole
index only where the new source does not keep OLD's ids, see :class:`EarlierRun`); a unit whose
samples all match under the same ids is linked as well, the rest read OLD's heatmaps with one
Zarr read per span and only the table parts they need, explain their new samples together as one
batch, and write every unit's shard and parts as before, durable together before the units'
markers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: explain settings that change a stored heatmap or row
EXPLAIN_KEYS = ("method", "composite", "target", "heatmap_dtype", "concepts", "concept_layer", "latent_layer")
#: at most this many bytes of heatmaps in one span's memory (at least one unit)
SPAN_BYTES = 64 << 20
#: spans per worker: enough for the workers to even out, few enough that each task's fixed cost stays small
SPANS_PER_WORKER = 4
INDEX_COLUMNS = ["sample_id", "key", "content_hash", "label", "status"]


def reuse_blockers(old_dir: Path, new_manifest: dict, new_config: dict, record_features: bool) -> list[str]:
    """Why OLD's explanations cannot be reused for NEW (empty: they can)."""
    from unhans.storage import RunLayout, table_columns
    from unhans.storage.tables import has_table

    old = RunLayout(Path(old_dir))
    if not old.manifest.exists():
        return [f"{old.root} is not an unhans run (no manifest.json)"]
    manifest = json.loads(old.manifest.read_text())
    if not (old.markers / "explain.done").exists():
        return [f"{old.root}: its explain stage did not finish"]
    reasons = []
    old_model, new_model = manifest.get("model", {}), new_manifest.get("model", {})
    fingerprints = (old_model.get("fingerprint"), new_model.get("fingerprint"))
    if None in fingerprints:
        reasons.append("the model has no checkpoint to fingerprint")
    elif fingerprints[0] != fingerprints[1]:
        reasons.append(f"the model's checkpoint differs (fingerprint {fingerprints[0]} vs {fingerprints[1]})")
    for key in ("kind", "factory", "name"):
        if old_model.get(key) != new_model.get(key):
            reasons.append(f"model.{key} differs ({old_model.get(key)!r} vs {new_model.get(key)!r})")
    if (manifest["config"].get("model") or {}).get("kwargs") != (new_config.get("model") or {}).get("kwargs"):
        reasons.append("model.kwargs differ")
    old_explain, new_explain = manifest["config"].get("explain", {}), new_config.get("explain", {})
    reasons += [f"explain.{k} differs ({old_explain.get(k)!r} vs {new_explain.get(k)!r})"
                for k in EXPLAIN_KEYS if old_explain.get(k) != new_explain.get(k)]
    old_transform = ((manifest["config"].get("input") or {}).get("transform"))
    new_transform = ((new_config.get("input") or {}).get("transform"))
    if old_transform != new_transform:
        reasons.append("input.transform differs")
    shapes = (manifest.get("dataset", {}).get("sample_shape"), new_manifest.get("dataset", {}).get("sample_shape"))
    if shapes[0] != shapes[1]:
        reasons.append(f"the sample shape differs ({shapes[0]} vs {shapes[1]})")
    if not has_table(old.root, "samples") or "content_hash" not in table_columns(old.root, "samples"):
        reasons.append("its samples table has no content_hash column (made by an older unhans)")
    elif has_table(old.root, "outputs"):
        has_features = "features" in table_columns(old.root, "outputs")
        if has_features != record_features:
            reasons.append("it " + ("recorded" if has_features else "did not record")
                           + " penultimate features and this run does " + ("not" if has_features else ""))
    return reasons


def spans(units: list[tuple[int, int, int]], workers: int, unit_bytes: int) -> list[list[tuple[int, int, int]]]:
    """The units to do, cut into runs of consecutive units (one Dask task each): about
    :data:`SPANS_PER_WORKER` per worker, none holding more than :data:`SPAN_BYTES` of heatmaps."""
    if not units:
        return []
    size = -(-len(units) // (SPANS_PER_WORKER * max(1, workers)))
    size = max(1, min(size, SPAN_BYTES // max(1, unit_bytes)))
    out: list[list[tuple[int, int, int]]] = []
    for unit in units:
        if out and len(out[-1]) < size and out[-1][-1][0] + 1 == unit[0]:
            out[-1].append(unit)
        else:
            out.append([unit])
    return out


class EarlierRun:
    """An earlier run's explained samples, opened once per worker and read where a span needs them.

    A span's samples are compared first with OLD's samples of the same ids (the span's own parts of OLD's ``samples``
    table, a few columns). When the new source keeps OLD's ids (``keeps_ids``: image inputs listed with
    :func:`~unhans.pipeline.image_index.following_order`, arrays keyed by row) that comparison is complete: a key
    OLD also had can sit nowhere else. Otherwise the samples it does not settle are looked up by key in OLD's whole
    index, read once per worker when first needed."""

    def __init__(self, old_dir: str, new_dir: str | None = None, *, keeps_ids: bool = False):
        from unhans.storage import Markers, open_heatmap_array
        from unhans.storage.heatmaps import shard_layout

        self.root = Path(old_dir)
        self.keeps_ids = keeps_ids
        self.heatmaps = open_heatmap_array(self.root, mode="r")
        self.num_samples = int(self.heatmaps.shape[0])
        self.shard = int(self.heatmaps.shards[0]) if self.heatmaps.shards else int(self.heatmaps.chunks[0])
        # NEW's units can take OLD's shard files as they are when both arrays lay their shards out the same way
        self.same_shards = (new_dir is not None
                            and shard_layout(open_heatmap_array(Path(new_dir), mode="r")) == shard_layout(self.heatmaps))
        self.markers = Markers(self.root)
        self.quarantined = int((self.markers.stage_info("explain") or {}).get("quarantined", 1))
        self._by_key: dict | None = None
        self._parts: dict[tuple[str, int], object] = {}
        self._whole: dict[str, object] = {}

    def match(self, first: int, keys: list[str], hashes: list[str], labels: np.ndarray) -> np.ndarray:
        """For the samples ``first, first + 1, ...`` with these keys, hashes and given labels: OLD's sample id when OLD
        explained the same key with the same content and the same given label, else -1 (a relabeled sample is explained
        again: its row, and with ``target: label`` its heatmap, change)."""
        n = len(keys)
        out = np.full(n, -1, np.int64)
        settled = np.zeros(n, bool)  # positions where OLD cannot hold the key under another id
        old = self._index(first, first + n)
        if old is not None and old.num_rows:
            at = old.column("sample_id").to_numpy() - first
            same_key = np.array(old.column("key").to_pylist(), object) == np.array(keys, object)[at]
            same = (same_key
                    & (np.array(old.column("content_hash").to_pylist(), object) == np.array(hashes, object)[at])
                    & (old.column("label").to_numpy() == np.asarray(labels)[at])
                    & (np.array(old.column("status").to_pylist(), object) == "ok"))
            out[at[same]] = first + at[same]
            settled[at[same_key]] = True  # OLD's keys are unique: this one is at this id only
            if self.keeps_ids:  # a key OLD also had sits at its old id: another key here is new
                settled[at] = True
        if self.keeps_ids:  # ... and so is every sample past OLD's end
            settled[max(0, self.num_samples - first):] = True
        for j in np.flatnonzero(~settled & (out < 0)):
            found = self._earlier_index().get(keys[j])
            if found is not None and found[1] == hashes[j] and found[2] == int(labels[j]):
                out[j] = found[0]
        return out

    def _index(self, first: int, last: int):
        """OLD's rows (:data:`INDEX_COLUMNS` and ``source``) of the ids in [first, last) that its unit parts hold
        (all of them, normally); None when a part is missing."""
        import pyarrow as pa
        import pyarrow.compute as pc

        last = min(last, self.num_samples)
        if first >= last:
            return None
        parts = [self._part("samples", p, INDEX_COLUMNS + ["source"]) for p in range(first // self.shard,
                                                                                  (last - 1) // self.shard + 1)]
        if None in parts:
            return None
        table = pa.concat_tables(parts)
        ids = table.column("sample_id")
        return table.filter(pc.and_(pc.greater_equal(ids, first), pc.less(ids, last)))

    def _earlier_index(self) -> dict:
        """key → (id, hash, label) of OLD's explained samples, read whole the first time it is needed."""
        if self._by_key is None:
            from unhans.storage import read_table

            index = read_table(self.root, "samples", columns=INDEX_COLUMNS)
            index = index.take(np.flatnonzero(index.column("status").to_numpy(zero_copy_only=False) == "ok"))
            self._by_key = dict(zip(index.column("key").to_pylist(),
                                    zip(index.column("sample_id").to_pylist(), index.column("content_hash").to_pylist(),
                                        index.column("label").to_pylist())))
        return self._by_key

    def stored(self, old_ids: np.ndarray) -> np.ndarray:
        """OLD's stored heatmaps of ``old_ids`` (in that order): one read of the range they span when they are dense
        in it (a grown dataset shifts runs of ids), else one read per chunk touched."""
        old_ids = np.asarray(old_ids, np.int64)
        if not len(old_ids):
            return np.empty((0, *self.heatmaps.shape[1:]), self.heatmaps.dtype)
        low, high = int(old_ids.min()), int(old_ids.max()) + 1
        if high - low <= 2 * len(old_ids):
            return self.heatmaps[low:high][old_ids - low]
        order = np.argsort(old_ids)
        out = np.empty((len(old_ids), *self.heatmaps.shape[1:]), self.heatmaps.dtype)
        out[order] = self.heatmaps.get_orthogonal_selection((old_ids[order],))
        return out

    def rows(self, name: str, old_ids: np.ndarray):
        """OLD's rows of table ``name`` for ``old_ids`` (in that order), from the parts of the units holding them."""
        import pyarrow as pa

        old_ids = np.asarray(old_ids, np.int64)
        parts = [self._part(name, int(p)) for p in np.unique(old_ids // self.shard)]
        table = pa.concat_tables(parts) if parts and None not in parts else None
        at = None if table is None else _positions(table, old_ids)
        if at is None:  # parts not cut by unit (not written by this stage): read the table whole, once
            table = self._whole.get(name)
            if table is None:
                from unhans.storage import read_table

                table = self._whole[name] = read_table(self.root, name)
            at = _positions(table, old_ids)
        return table.take(pa.array(at, pa.int64()))

    def _part(self, name: str, part: int, columns: list[str] | None = None):
        """OLD's part ``part`` of table ``name`` (only ``columns``, when given), or None when it has no such file."""
        from unhans.storage.tables import part_path, read_part

        cache = (name, part, None if columns is None else tuple(columns))
        if cache not in self._parts:
            path = part_path(self.root, name, part)
            self._parts[cache] = read_part(path, columns) if path.is_file() else None
        return self._parts[cache]

    def forget_parts(self) -> None:
        """Drop the table parts read for the last span (the next span needs others)."""
        self._parts.clear()

    def copied(self, old_ids: np.ndarray, new_ids: np.ndarray, sources: list[str]):
        """(stored heatmaps, samples rows, outputs rows) of ``old_ids`` renumbered to ``new_ids``."""
        import pyarrow as pa

        rows = self.rows("samples", old_ids)
        rows = rows.set_column(rows.column_names.index("sample_id"), "sample_id", pa.array(new_ids, pa.int64()))
        rows = rows.set_column(rows.column_names.index("source"), "source", pa.array(sources, pa.string()))
        outputs = self.rows("outputs", old_ids)
        outputs = outputs.set_column(outputs.column_names.index("sample_id"), "sample_id",
                                     pa.array(new_ids, pa.int64()))
        return self.stored(old_ids), rows, outputs

    def unchanged_unit(self, unit: int, start: int, stop: int, earlier_ids: np.ndarray):
        """OLD's files of unit ``unit`` (shard, samples part, outputs part) when the source knows every sample of NEW's
        unit [start, stop) unchanged under the same id (``earlier_ids``: :meth:`~unhans.pipeline.sources.Source.unchanged_ids`)
        and OLD explained them all; else None. Nothing of the unit's samples is read."""
        if not self._same_extent(unit, start, stop) or not np.array_equal(earlier_ids, np.arange(start, stop)):
            return None
        if self.quarantined and (self.markers.unit_info("explain", unit) or {}).get("quarantined", 1):
            return None
        return self._files(unit)

    def unit_files(self, unit: int, start: int, stop: int, old_ids: np.ndarray, sources: list[str]):
        """OLD's files of unit ``unit`` when NEW's unit [start, stop) can be them as they are, by :meth:`match`'s
        ``old_ids``: every sample reused under the same id, the same shard extent and layout, the same ``source``
        names; else None."""
        if not self._same_extent(unit, start, stop) or not np.array_equal(old_ids, np.arange(start, stop)):
            return None
        old = self._part("samples", unit, INDEX_COLUMNS + ["source"])  # read already by match
        if (old is None or not np.array_equal(old.column("sample_id").to_numpy(), np.arange(start, stop))
                or old.column("source").to_pylist() != list(sources)):
            return None
        return self._files(unit)

    def _same_extent(self, unit: int, start: int, stop: int) -> bool:
        """Whether NEW's unit [start, stop) is OLD's unit ``unit``: the same samples in a shard laid out the same way."""
        return self.same_shards and start == unit * self.shard and stop == min(start + self.shard, self.num_samples)

    def _files(self, unit: int):
        from unhans.storage.heatmaps import shard_file
        from unhans.storage.tables import part_path

        samples, outputs = part_path(self.root, "samples", unit), part_path(self.root, "outputs", unit)
        if not (samples.is_file() and outputs.is_file()):
            return None
        return shard_file(self.root, self.heatmaps, unit), samples, outputs


def _positions(table, ids: np.ndarray) -> np.ndarray | None:
    """Row positions of ``ids`` in ``table``'s ``sample_id`` column, or None when one is missing."""
    have = table.column("sample_id").to_numpy()
    if not len(have):
        return None if len(ids) else np.empty(0, np.int64)
    order = np.argsort(have, kind="stable")
    at = order[np.minimum(np.searchsorted(have, ids, sorter=order), len(have) - 1)]
    return at if np.array_equal(have[at], ids) else None


@dataclass
class UnitOutput:
    """One unit's results, to be written by :func:`unhans.pipeline.stages.explain.write_units`: stored heatmaps and
    table rows, or (``files``) OLD's shard and parts to link as they are."""

    unit: int
    start: int
    stop: int
    stored: np.ndarray | None
    rows: object | None
    outputs: object | None
    reused: int
    files: tuple[Path, Path, Path] | None = None

    @property
    def quarantined(self) -> int:
        return 0 if self.rows is None else sum(s != "ok" for s in self.rows.column("status").to_pylist())


def take_and_explain(loaded, start: int, stop: int, old: np.ndarray, sources: list[str],
                     skip: np.ndarray | None = None):
    """Samples [start, stop) given their OLD ids ``old`` (-1: explain here): (stored heatmaps, samples rows, outputs
    rows, number reused). Positions in ``skip`` are left out (their rows too; their heatmaps stay unset)."""
    import pyarrow as pa

    from .explain import _concatenated, _explain_fresh

    n = stop - start
    wanted = np.ones(n, bool) if skip is None else ~skip
    taken = np.flatnonzero(wanted & (old >= 0))
    fresh = wanted & (old < 0)
    stored = np.zeros((n, *loaded.earlier.heatmaps.shape[1:]), dtype=np.dtype(loaded.job.explain.heatmap_dtype))
    rows = outputs = None
    if len(taken):
        stored[taken], rows, outputs = loaded.earlier.copied(old[taken], start + taken, [sources[j] for j in taken])
    if fresh.any():  # the new or changed samples: read run by run, explained together as one batch
        edges = np.flatnonzero(np.diff(np.concatenate([[False], fresh, [False]]).astype(int)))
        batch = _concatenated([loaded.source.load(start + a, start + b) for a, b in zip(edges[::2], edges[1::2])])
        todo = np.flatnonzero(fresh)
        new_stored, new_rows, new_outputs = _explain_fresh(loaded, batch, start + todo)
        stored[todo] = new_stored
        if rows is None:
            rows, outputs = new_rows, new_outputs
        else:
            rows = pa.concat_tables([rows.select(new_rows.column_names).cast(new_rows.schema), new_rows])
            outputs = pa.concat_tables([outputs.select(new_outputs.column_names).cast(new_outputs.schema),
                                        new_outputs])
            rows, outputs = rows.sort_by("sample_id"), outputs.sort_by("sample_id")
    return stored, rows, outputs, len(taken)


def explain_span(loaded, units: list[tuple[int, int, int]]) -> list[UnitOutput]:
    """Consecutive units of a re-audit: each unit's :class:`UnitOutput`, OLD's where it can be taken.

    Units the source knows unchanged (image files by their stat) are linked without reading anything of their
    samples; the others are matched sample by sample (:meth:`EarlierRun.match`), and explained where needed."""
    earlier = loaded.earlier
    linked = {}
    first, last = units[0][1], units[-1][2]
    unchanged = loaded.source.unchanged_ids(earlier.root, first, last)
    if unchanged is not None:
        for unit, start, stop in units:
            files = earlier.unchanged_unit(unit, start, stop, unchanged[start - first:stop - first])
            if files is not None:
                linked[unit] = files
    rest = [u for u in units if u[0] not in linked]
    if rest:
        first, last = rest[0][1], rest[-1][2]
        keys, sources, hashes = loaded.source.identities(first, last)
        old = earlier.match(first, keys, hashes, loaded.source.label_range(first, last))
        skip = np.zeros(last - first, bool)
        for unit, start, stop in units:
            if not first <= start < last:
                continue
            files = linked.get(unit) or earlier.unit_files(unit, start, stop, old[start - first:stop - first],
                                                           sources[start - first:stop - first])
            if files is not None:
                linked[unit] = files
                skip[start - first:stop - first] = True
        if not skip.all():
            stored, rows, outputs, _ = take_and_explain(loaded, first, last, old, sources, skip)
            ids = rows.column("sample_id").to_numpy()
    earlier.forget_parts()
    out = []
    for unit, start, stop in units:
        if unit in linked:
            out.append(UnitOutput(unit, start, stop, None, None, None, stop - start, linked[unit]))
            continue
        low, high = np.searchsorted(ids, [start, stop])
        reused = int((old[start - first:stop - first] >= 0).sum())
        out.append(UnitOutput(unit, start, stop, stored[start - first:stop - first], rows.slice(low, high - low),
                              outputs.slice(low, high - low), reused))
    return out
