"""Every file of a run directory, named in one place.

::

    RUN/manifest.json              schema version, config, package versions, dataset/model identity
    RUN/heatmaps.zarr              (N, C, H, W) relevance / scale, Zarr v3, one shard per unit
    RUN/tables/<name>/part-*.parquet   per-sample tables: samples, outputs, dynamics, spray, flags,
                                   ground_truth (embedded dataset only)
    RUN/markers/<stage>.done       completion markers (and markers/<stage>/<unit>.done)
    RUN/inputs/                    the embedded dataset's arrays, or the image index of a user's input
                                   (path, key, label, size, mtime_ns, content_hash, earlier_id: unhans.pipeline.image_index)
    RUN/dynamics/epoch-*.npz       a trajectory recorded by the audit's own training stage
    RUN/model.pt                   the embedded path's trained model
    RUN/spray.json                 per-class SpRAy results and Clever-Hans candidates
    RUN/spray_embeddings/<class>.npz  each class's spectral embedding, eigenvalues, UMAP map, clusterings per k
    RUN/faithfulness.json          the check of the heatmaps themselves (curves, randomization, warnings)
    RUN/spray_cluster_means/<class>.npz   mean heatmap per cluster of that class (for the report)
    RUN/concept_maps/<class>.npz   a flagged class's conditional heatmaps through its latent concept
    RUN/spray_class_maps/part-*.npy|.npz  relevance maps regrouped by class while the spray stage
                                   runs (deleted when it finishes)
    RUN/summary.json               what nightly jobs compare
    RUN/report.html                what people read
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
HEATMAPS = "heatmaps.zarr"
TABLES = "tables"
MARKERS = "markers"
INPUTS = "inputs"
DYNAMICS = "dynamics"
MODEL = "model.pt"
SPRAY = "spray.json"
FAITHFULNESS = "faithfulness.json"
CLUSTER_MEANS = "spray_cluster_means"
CLASS_EMBEDDINGS = "spray_embeddings"
CONCEPT_MAPS = "concept_maps"
CLASS_MAPS = "spray_class_maps"
SUMMARY = "summary.json"
REPORT = "report.html"
IMAGE_INDEX = "image_index.parquet"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def heatmaps(self) -> Path:
        return self.root / HEATMAPS

    @property
    def tables(self) -> Path:
        return self.root / TABLES

    def table(self, name: str) -> Path:
        return self.root / TABLES / name

    @property
    def markers(self) -> Path:
        return self.root / MARKERS

    @property
    def inputs(self) -> Path:
        return self.root / INPUTS

    @property
    def image_index(self) -> Path:
        return self.root / INPUTS / IMAGE_INDEX

    @property
    def embedded_images(self) -> Path:
        return self.root / INPUTS / "images.npy"

    @property
    def embedded_labels(self) -> Path:
        return self.root / INPUTS / "labels.npy"

    @property
    def embedded_test(self) -> Path:
        return self.root / INPUTS / "test.npz"

    @property
    def dynamics(self) -> Path:
        """The run directory's own trajectory folder (``DynamicsRecorder(store=RUN)`` writes here)."""
        return self.root / DYNAMICS

    @property
    def model(self) -> Path:
        return self.root / MODEL

    @property
    def spray(self) -> Path:
        return self.root / SPRAY

    @property
    def faithfulness(self) -> Path:
        return self.root / FAITHFULNESS

    @property
    def cluster_means(self) -> Path:
        return self.root / CLUSTER_MEANS

    def class_means(self, class_id: int) -> Path:
        return self.root / CLUSTER_MEANS / f"{int(class_id):08d}.npz"

    def concept_maps(self, class_id: int) -> Path:
        return self.root / CONCEPT_MAPS / f"{int(class_id):08d}.npz"

    def class_embedding(self, class_id: int) -> Path:
        return self.root / CLASS_EMBEDDINGS / f"{int(class_id):08d}.npz"

    @property
    def class_maps(self) -> Path:
        return self.root / CLASS_MAPS

    def class_maps_part(self, part: int) -> tuple[Path, Path]:
        """(maps .npy, index .npz) of one part of the class-grouped maps."""
        stem = self.root / CLASS_MAPS / f"part-{int(part):08d}"
        return stem.with_suffix(".npy"), stem.with_suffix(".npz")

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    @property
    def report(self) -> Path:
        return self.root / REPORT
