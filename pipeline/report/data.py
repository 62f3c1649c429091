"""What the report reads from a finished run: the summaries, a few per-sample columns, lazy heatmaps.

Per-sample columns are a few numbers per sample (the client already holds as much in the flags
stage); heatmaps and images are read only for the samples a section shows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class ReportData:
    run: Path
    summary: dict
    spray: dict                 # spray.json: window, pixel_std, per-class summaries
    keys: list[str]
    label: np.ndarray           # given label per sample
    prediction: np.ndarray
    class_of: np.ndarray        # the class a sample was explained for (-1: quarantined)
    cluster: np.ndarray         # its SpRAy cluster within that class
    umap: np.ndarray            # (N, 2)
    artifact_score: np.ndarray
    artifact_suspect: np.ndarray
    mislabel_score: np.ndarray
    mislabel_suspect: np.ndarray
    dynamics: dict              # optional columns of the dynamics table: aum, confidence, variability, correctness
    means: object               # unhans.storage.ClusterMeans
    relevance: object           # unhans.storage.Relevance
    names: list[str]

    @classmethod
    def load(cls, run: Path) -> "ReportData":
        from unhans.storage import ClusterMeans, open_run

        run = Path(run)
        r = open_run(run)
        summary = json.loads(r.layout.summary.read_text())
        spray = json.loads(r.layout.spray.read_text())
        samples = r.table("samples").sort_by("sample_id")
        sp = r.table("spray").sort_by("sample_id")
        flags = r.table("flags").sort_by("sample_id")
        dyn = r.table("dynamics").sort_by("sample_id")
        class_of = sp.column("class_id").to_numpy()
        names = summary.get("dataset", {}).get("class_names") or [
            str(i) for i in range(int(class_of.max(initial=-1)) + 1)]

        def column(table, name, dtype=np.float64):
            return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype)

        return cls(
            run=run, summary=summary, spray=spray, keys=samples.column("key").to_pylist(),
            label=column(samples, "label", np.int64), prediction=column(samples, "prediction", np.int64),
            class_of=class_of, cluster=sp.column("cluster").to_numpy(),
            umap=np.stack([column(sp, "umap_x"), column(sp, "umap_y")], 1),
            artifact_score=column(flags, "artifact_score"), artifact_suspect=column(flags, "artifact_suspect", bool),
            mislabel_score=column(flags, "mislabel_score"), mislabel_suspect=column(flags, "mislabel_suspect", bool),
            dynamics={c: column(dyn, c) for c in ("aum", "confidence", "variability", "correctness")
                      if c in dyn.column_names},
            means=ClusterMeans(run), relevance=r.relevance(), names=names)

    def name(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else str(class_id)

    @property
    def num_classes(self) -> int:
        return len(self.spray["classes"])
