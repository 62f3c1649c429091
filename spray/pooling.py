"""Relevance pooling (seed 003, VI-B1): relevance summed over regions and groups of samples.

LRP conserves relevance, so the relevance of a feature group I on a sample group G is
R_IG = Σ_{n∈G} Σ_{i∈I} R_i(x_n): here I ranges over the cells of a region grid and G over
clusters and classes.
"""
from __future__ import annotations

import numpy as np


def region_relevance(heatmaps: np.ndarray, grid: int) -> np.ndarray:
    """(N, C, H, W) or (N, H, W) relevance → (N, grid, grid) relevance per region (signed, summed)."""
    maps = np.asarray(heatmaps, dtype=np.float64)
    if maps.ndim == 4:
        maps = maps.sum(axis=1)
    if grid > min(maps.shape[1:]):
        raise ValueError(f"region grid {grid} is larger than the heatmap ({maps.shape[1]}x{maps.shape[2]})")
    return cell_sums(maps, grid, grid)


def cell_sums(maps: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(N, H, W) → (N, rows, cols): sums over a grid of near-equal cells (the boundaries of
    ``numpy.array_split``: the first cells one pixel larger where a side does not divide);
    rows ≤ H and cols ≤ W."""
    return np.add.reduceat(np.add.reduceat(maps, _cell_starts(maps.shape[1], rows), axis=1),
                           _cell_starts(maps.shape[2], cols), axis=2)


def _cell_starts(side: int, cells: int) -> np.ndarray:
    """First pixel of each of ``cells`` near-equal cells along a side of ``side`` pixels."""
    sizes = [len(part) for part in np.array_split(np.arange(side), cells)]
    return np.cumsum([0] + sizes[:-1])


def pool_by_group(regions: np.ndarray, groups: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
    """Per group: total relevance per region and its share of the group's total relevance."""
    out = {}
    for g in np.unique(groups):
        total = regions[groups == g].sum(axis=0)
        denom = np.abs(total).sum()
        out[int(g)] = {"relevance": total, "share": total / denom if denom > 0 else np.zeros_like(total)}
    return out
