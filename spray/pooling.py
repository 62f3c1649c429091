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
    n, h, w = maps.shape
    rows = np.array_split(np.arange(h), grid)
    cols = np.array_split(np.arange(w), grid)
    out = np.empty((n, grid, grid))
    for a, r in enumerate(rows):
        for b, c in enumerate(cols):
            out[:, a, b] = maps[:, r[0]:r[-1] + 1, c[0]:c[-1] + 1].sum(axis=(1, 2))
    return out


def pool_by_group(regions: np.ndarray, groups: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
    """Per group: total relevance per region and its share of the group's total relevance."""
    out = {}
    for g in np.unique(groups):
        total = regions[groups == g].sum(axis=0)
        denom = np.abs(total).sum()
        out[int(g)] = {"relevance": total, "share": total / denom if denom > 0 else np.zeros_like(total)}
    return out
