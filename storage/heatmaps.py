"""Heatmaps in a Zarr v3 array, sharded so that one unit of work owns whole shards.

Stored values are each sample's relevance divided by its max-abs value (float16 by
default: raw relevances around 1e-6 would lose about 18% of their sum in float16); the
per-sample scale is kept in the sample table, so ``stored * scale`` is the relevance.
Inner chunks hold up to 64 samples, shards hold one unit (``shard_size`` samples):
concurrent writers never touch the same shard file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .layout import HEATMAPS


def create_heatmap_array(run_dir: Path, num_samples: int, sample_shape: tuple[int, ...],
                         shard_size: int, dtype: str = "float16"):
    """Create (or open, if it exists with the same layout) the heatmap array."""
    import zarr

    path = Path(run_dir) / HEATMAPS
    shape = (num_samples, *sample_shape)
    chunk = min(64, shard_size)
    while shard_size % chunk:
        chunk -= 1
    if path.exists():
        array = zarr.open_array(path, mode="r+")
        if array.shape != shape or array.dtype != np.dtype(dtype) or array.shards[0] != shard_size:
            raise ValueError(
                f"{path}: existing heatmap array has shape {array.shape}, dtype {array.dtype}, "
                f"shard {array.shards[0]}; this run needs {shape}, {dtype}, shard {shard_size}. "
                "Use a new --out directory or --force."
            )
        return array
    return zarr.create_array(
        store=str(path), shape=shape, dtype=dtype,
        chunks=(chunk, *sample_shape), shards=(shard_size, *sample_shape),
        fill_value=0, dimension_names=["sample", *("channel", "height", "width")[-len(sample_shape):]]
        if len(sample_shape) <= 3 else None,
    )


def open_heatmap_array(run_dir: Path, mode: str = "r"):
    import zarr

    return zarr.open_array(Path(run_dir) / HEATMAPS, mode=mode)


def shard_file(run_dir: Path, array, unit: int) -> Path:
    """The file holding shard ``unit`` (samples ``unit * shard_size`` onwards) of the heatmap ``array`` of a run.
    Zarr does not write a shard whose samples are all zero (the fill value): the file may be absent."""
    key = array.metadata.encode_chunk_key((int(unit),) + (0,) * (array.ndim - 1))
    return Path(run_dir) / HEATMAPS / key


def shard_layout(array) -> dict:
    """Everything that makes a shard file's bytes mean the same in two heatmap arrays (all but their length)."""
    layout = array.metadata.to_dict()
    return {key: value for key, value in layout.items() if key not in ("shape", "attributes")}


def normalize_for_storage(relevance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split (B, ...) relevance into (relevance / maxabs, maxabs); an all-zero map has scale 0."""
    flat = relevance.reshape(len(relevance), -1)
    scale = np.abs(flat).max(axis=1)
    safe = np.where(scale > 0, scale, 1.0)
    return relevance / safe.reshape((-1,) + (1,) * (relevance.ndim - 1)), scale
