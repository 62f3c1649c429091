"""Incremental re-audit: the explain stage takes what an earlier run already explained.

``unhans audit CONFIG --out NEW --reuse OLD``: a sample of NEW whose ``key`` and content hash
(:meth:`unhans.pipeline.sources.Source.identities`: the file's bytes for image files, the row's
bytes for arrays) and given label equal those of an explained (``ok``) sample of OLD takes OLD's stored heatmap,
``samples`` row and ``outputs`` row, copied into NEW (so NEW stays valid when OLD is deleted);
only new or changed samples are explained. That is sound only when everything else that made
the heatmap is the same, which :func:`reuse_blockers` checks first: the model's fingerprint, the
explainer settings, the input transform, the sample shape and whether penultimate features are
recorded. Any difference means no reuse at all, and the reason is printed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: explain settings that change a stored heatmap or row
EXPLAIN_KEYS = ("method", "composite", "target", "heatmap_dtype", "concepts", "concept_layer")


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


class EarlierRun:
    """An earlier run's explained samples, opened once per worker: lookup by key and hash, rows to copy."""

    def __init__(self, old_dir: str):
        from unhans.storage import open_heatmap_array, read_table

        self.root = Path(old_dir)
        samples = read_table(self.root, "samples").sort_by("sample_id")
        self.samples = samples
        self.outputs = read_table(self.root, "outputs").sort_by("sample_id")
        ok = samples.column("status").to_numpy(zero_copy_only=False) == "ok"
        ids = samples.column("sample_id").to_numpy()
        keys = samples.column("key").to_pylist()
        hashes = samples.column("content_hash").to_pylist()
        labels = samples.column("label").to_numpy()
        self.by_key = {keys[i]: (int(ids[i]), hashes[i], int(labels[i])) for i in np.flatnonzero(ok)}
        self.row_of = {int(sample_id): i for i, sample_id in enumerate(ids)}
        self.out_row_of = {int(s): i for i, s in enumerate(self.outputs.column("sample_id").to_numpy())}
        self.heatmaps = open_heatmap_array(self.root, mode="r")

    def match(self, keys: list[str], hashes: list[str], labels: np.ndarray) -> dict[int, int]:
        """Positions in ``keys`` whose sample OLD explained with the same content and the same given label → OLD's
        sample id (a relabeled sample is explained again: its row, and with ``target: label`` its heatmap, change)."""
        out = {}
        for j, (key, digest, label) in enumerate(zip(keys, hashes, labels)):
            found = self.by_key.get(key)
            if found is not None and found[1] == digest and found[2] == int(label):
                out[j] = found[0]
        return out

    def copied(self, old_ids: list[int], new_ids: list[int], sources: list[str]):
        """(stored heatmaps, samples rows, outputs rows) of ``old_ids`` renumbered to ``new_ids``."""
        import pyarrow as pa

        old = np.asarray(old_ids)
        if len(old) and np.array_equal(old, np.arange(old[0], old[0] + len(old))):
            stored = self.heatmaps[int(old[0]):int(old[0]) + len(old)]      # the common case: one contiguous range
        else:
            order = np.argsort(old)
            stored = np.empty((len(old), *self.heatmaps.shape[1:]), dtype=self.heatmaps.dtype)
            stored[order] = self.heatmaps.get_orthogonal_selection((old[order],))  # one read per chunk touched
        rows = self.samples.take(pa.array([self.row_of[i] for i in old_ids], pa.int64()))
        rows = rows.set_column(rows.column_names.index("sample_id"), "sample_id", pa.array(new_ids, pa.int64()))
        rows = rows.set_column(rows.column_names.index("source"), "source", pa.array(sources, pa.string()))
        outputs = self.outputs.take(pa.array([self.out_row_of[i] for i in old_ids], pa.int64()))
        outputs = outputs.set_column(0, "sample_id", pa.array(new_ids, pa.int64()))
        return stored, rows, outputs
