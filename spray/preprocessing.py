"""Heatmaps → SpRAy features: channel sum, sum-pooling, normalization (Lapuschkin et al. 2019)."""
from __future__ import annotations

import numpy as np

from .pooling import cell_sums


def pool_heatmaps(heatmaps: np.ndarray, pool_size: int, relevance: str = "positive") -> np.ndarray:
    """Sum over channels, keep positive (or signed) relevance, sum-pool to a grid of at most pool_size x pool_size.

    heatmaps: (N, C, H, W) or (N, H, W). Returns (N, min(pool_size, H), min(pool_size, W)) float32.
    Where a side is not a multiple of its cells, the cells differ by one pixel (as
    ``numpy.array_split``); no relevance is dropped: sum-pooling conserves it. (A time series'
    features × time plane is rarely square, or a multiple of 8.)
    """
    maps = np.asarray(heatmaps, dtype=np.float32)
    if maps.ndim == 4:
        maps = maps.sum(axis=1)
    if maps.ndim != 3:
        raise ValueError(f"heatmaps must be (N, C, H, W) or (N, H, W), got shape {heatmaps.shape}")
    if relevance == "positive":
        maps = np.clip(maps, 0.0, None)
    elif relevance != "signed":
        raise ValueError(f"relevance must be 'positive' or 'signed', got {relevance!r}")
    n, h, w = maps.shape
    if h % pool_size == 0 and w % pool_size == 0:
        return maps.reshape(n, pool_size, h // pool_size, pool_size, w // pool_size).sum(axis=(2, 4))
    return cell_sums(maps, min(pool_size, h), min(pool_size, w))


def normalize_features(features: np.ndarray, method: str = "l2") -> np.ndarray:
    """Flatten (N, ...) to (N, D) and scale each row to unit L2 norm or unit max-abs.

    An all-zero row stays zero.
    """
    flat = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    if method == "l2":
        norm = np.linalg.norm(flat, axis=1)
    elif method == "maxabs":
        norm = np.abs(flat).max(axis=1)
    else:
        raise ValueError(f"normalize must be 'l2' or 'maxabs', got {method!r}")
    return flat / np.where(norm > 0, norm, 1.0)[:, None]
