"""A flagged class's conditional heatmaps: where its latent concept sits in a few of its suspects.

``RUN/concept_maps/<class>.npz`` holds ``sample_id`` (n,), ``maps`` (n, H, W) (the relevance that
flows through the concept's channels only, summed over input channels) and ``channels`` (the
channels of the latent layer they flow through). Written by the flags stage, read by the report.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import write_npz_atomic
from .layout import RunLayout


def write_concept_maps(run: str | Path, class_id: int, sample_ids: np.ndarray, maps: np.ndarray,
                       channels: list[int]) -> Path:
    """Write one class's conditional heatmaps (``maps`` (n, H, W), one per sample id)."""
    sample_ids, maps = np.asarray(sample_ids, np.int64), np.asarray(maps, np.float32)
    if maps.ndim != 3 or len(maps) != len(sample_ids):
        raise ValueError(f"concept maps must be (samples, H, W), one per sample id ({len(sample_ids)}); "
                         f"got shape {maps.shape}")
    path = RunLayout(run).concept_maps(class_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_npz_atomic(path, compressed=True, sample_id=sample_ids, maps=maps,
                            channels=np.asarray(channels, np.int64))


def read_concept_maps(run: str | Path, class_id: int) -> dict[int, np.ndarray]:
    """sample id → its (H, W) conditional heatmap; empty when the class has none."""
    path = RunLayout(run).concept_maps(class_id)
    if not path.is_file():
        return {}
    with np.load(path) as archive:
        return {int(i): m for i, m in zip(archive["sample_id"], archive["maps"])}
