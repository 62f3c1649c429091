"""Linear dimensionality reduction before the kNN search: PCA from one streaming pass.

NN-descent on 10^6 pooled heatmaps of 1024 dimensions spends its time in distance
evaluations; pooled heatmaps are smooth, so a few dozen principal directions hold nearly
all of their variance and keep most nearest neighbours (measured: 48 components keep
~98% of the variance and ~90% of the exact 10-NN of the synthetic heatmaps in
``benchmarks/spray_scale.py``).

The covariance is accumulated chunk by chunk with the shifted-data algorithm (Chan,
Golub & LeVeque 1983): with s the mean of the first chunk,
C = (1/N) Σ (x - s)(x - s)^T - m m^T, m = (1/N) Σ (x - s),
one float32 GEMM per chunk summed in float64 (2·N·D² flops, D² memory, no randomness).
The components are the top eigenvectors of C. Input can be any array sliceable by rows
(NumPy, memmap, Zarr) or any re-iterable of (rows, D) chunks.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

CHUNK_ROWS = 16_384  # rows per chunk: 64 MB of float32 at D = 1024


@dataclass
class LinearReduction:
    """x ↦ (x - mean) @ components.T, components (d, D) orthonormal rows, variance descending."""

    mean: np.ndarray                 # (D,) float64
    components: np.ndarray           # (d, D) float32
    explained_variance: np.ndarray   # (d,) variance along each component
    total_variance: float            # trace of the covariance
    n_samples: int

    @property
    def explained_variance_ratio(self) -> float:
        """Fraction of the total variance the d components keep."""
        return float(self.explained_variance.sum() / max(self.total_variance, 1e-30))

    def transform(self, rows: np.ndarray) -> np.ndarray:
        """(n, D) → (n, d) float32 coordinates."""
        rows = np.asarray(rows, dtype=np.float32)
        return (rows - self.mean.astype(np.float32)) @ self.components.T

    def inverse_transform(self, coords: np.ndarray) -> np.ndarray:
        """(n, d) coordinates → (n, D) points of the original space (the projection's part)."""
        return np.asarray(coords, dtype=np.float64) @ self.components.astype(np.float64) + self.mean


def row_chunks(array, rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
    """Consecutive (≤ rows, D) float32 blocks of a 2-D array-like (NumPy, memmap, Zarr)."""
    for start in range(0, len(array), rows):
        yield np.asarray(array[start:start + rows], dtype=np.float32)


ChunkSource = Callable[[], Iterable[np.ndarray]]


def _as_source(data) -> ChunkSource:
    if callable(data):
        return data
    if getattr(data, "ndim", None) != 2:
        raise ValueError(f"data must be a 2-D array or a callable returning chunks, got {type(data).__name__}")
    return lambda: row_chunks(data)


def fit_pca(chunks: Iterable[np.ndarray], n_components: int) -> LinearReduction:
    """Principal components of all rows of ``chunks`` (an iterable of (rows, D) blocks), one pass."""
    if n_components < 1:
        raise ValueError(f"n_components must be ≥ 1, got {n_components}")
    shift = gram = total = None
    n = 0
    for block in chunks:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2:
            raise ValueError(f"chunks must be (rows, D), got shape {block.shape}")
        if shift is None:
            shift = block.mean(axis=0)
            gram = np.zeros((block.shape[1], block.shape[1]), np.float64)
            total = np.zeros(block.shape[1], np.float64)
        elif block.shape[1] != len(shift):
            raise ValueError(f"chunks must all have D = {len(shift)} columns, got {block.shape[1]}")
        centred = block - shift
        gram += centred.T @ centred
        total += centred.sum(axis=0, dtype=np.float64)
        n += len(block)
    if n == 0:
        raise ValueError("fit_pca got no rows")
    m = total / n
    cov = gram / n - np.outer(m, m)
    d = min(n_components, cov.shape[0])
    values, vectors = np.linalg.eigh(cov)
    values, vectors = values[::-1][:d], vectors[:, ::-1][:, :d]
    return LinearReduction(mean=shift + m, components=np.ascontiguousarray(vectors.T, dtype=np.float32),
                           explained_variance=np.maximum(values, 0.0), total_variance=float(np.trace(cov)),
                           n_samples=n)


def pca_reduce(data, n_components: int) -> tuple[np.ndarray, LinearReduction]:
    """Fit PCA in one pass over ``data`` and project it in a second: ((N, d) float32, reduction).

    ``data``: an (N, D) array-like sliceable by rows, or a callable returning a fresh
    iterable of (rows, D) chunks on each call (e.g. a generator function reading a store).
    """
    source = _as_source(data)
    reduction = fit_pca(source(), n_components)
    out = np.empty((reduction.n_samples, len(reduction.components)), np.float32)
    start = 0
    for block in source():
        if start + len(block) > len(out):
            raise ValueError(f"the chunk source yielded more rows on the second pass than the {len(out)} of the first")
        out[start:start + len(block)] = reduction.transform(block)
        start += len(block)
    if start != reduction.n_samples:
        raise ValueError(f"the chunk source yielded {start} rows on the second pass, "
                         f"{reduction.n_samples} on the first")
    return out, reduction
