"""A sparse k-nearest-neighbour graph of the features, shared by the spectral embedding and UMAP.

The search is chosen by the number of samples N and the width D of the features:

- N ≤ :data:`EXACT_LIMIT`: exact search (scikit-learn) on the features as given.
- N > :data:`EXACT_LIMIT`: features wider than :data:`REDUCE_ABOVE_DIMS` are first
  projected on their :data:`REDUCED_DIMS` principal components (:mod:`spray.reduction`),
  since the search's cost is dominated by distance evaluations in D dimensions; then
  exact search up to :data:`EXACT_REDUCED_LIMIT` samples (no JIT compilation to pay),
  NN-descent (pynndescent, Dong et al. 2011) with the tuned :data:`NNDESCENT` settings above.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .reduction import LinearReduction, pca_reduce

# Measured on the shared 2-core machine (load 4-7), synthetic pooled heatmaps (benchmarks/spray_scale.py):
# exact search at 2·10^4 x 1024 dims takes ~25 s, PCA to 48 dims + exact search ~5 s, same SpRAy clusters.
EXACT_LIMIT = 10_000          # up to here: exact search on the features as given (small groups are exact)
REDUCE_ABOVE_DIMS = 64        # above EXACT_LIMIT samples, wider features are PCA-reduced before the search
REDUCED_DIMS = 48             # principal components kept (≈98% variance, ≈90% of exact 10-NN on pooled heatmaps)
EXACT_REDUCED_LIMIT = 40_000  # exact in ≤ 64 dims up to here (5 s at 3·10^4); NN-descent's first call compiles ~40 s
# Fewer trees and iterations than pynndescent's defaults (12 trees, log2 N iterations): same
# 15-NN recall (0.993 vs 0.994) on 10^5 reduced heatmaps in a third of the time (9 s vs 25 s).
NNDESCENT = {"n_trees": 8, "n_iters": 8, "low_memory": True}


@dataclass
class KnnGraph:
    """``indices[i]`` are the k nearest neighbours of sample i (itself first), with ``distances``.

    ``reduction`` is the PCA the distances were measured in, or None for the features as given.
    """

    indices: np.ndarray
    distances: np.ndarray
    reduction: LinearReduction | None = None

    @property
    def n_neighbors(self) -> int:
        return self.indices.shape[1]


def knn_graph(features: np.ndarray, n_neighbors: int, seed: int = 0, *,
              reduce_to: int | None = REDUCED_DIMS) -> KnnGraph:
    """Euclidean kNN graph; exact below :data:`EXACT_REDUCED_LIMIT` samples, NN-descent above.

    ``n_neighbors`` counts the sample itself (UMAP's convention), clipped to N.
    ``reduce_to``: principal components searched in when N > EXACT_LIMIT and
    D > REDUCE_ABOVE_DIMS (None: never reduce).
    """
    n = len(features)
    k = min(max(2, n_neighbors), n)  # a lone sample is its own only neighbour
    reduction = None
    if n > EXACT_LIMIT and reduce_to is not None and features.shape[1] > REDUCE_ABOVE_DIMS:
        features, reduction = pca_reduce(features, reduce_to)
    if n <= EXACT_LIMIT or (n <= EXACT_REDUCED_LIMIT and features.shape[1] <= REDUCE_ABOVE_DIMS):
        from sklearn.neighbors import NearestNeighbors

        dist, idx = NearestNeighbors(n_neighbors=k).fit(features).kneighbors(features)
    else:
        from pynndescent import NNDescent

        index = NNDescent(np.asarray(features, dtype=np.float32), n_neighbors=k, random_state=seed, **NNDESCENT)
        idx, dist = index.neighbor_graph
    return KnnGraph(indices=idx.astype(np.int64), distances=dist.astype(np.float32), reduction=reduction)


def affinity_matrix(graph: KnnGraph):
    """Symmetric sparse affinities with a self-tuning Gaussian kernel (Zelnik-Manor & Perona).

    a_ij = exp(-d_ij^2 / (s_i s_j)), s_i the distance to i's median neighbour; the kNN
    relation is symmetrized by max. Self-loops (and neighbours NN-descent left unfilled,
    index -1) are dropped. float32, ~(k-1)·N·1.3 stored entries.
    """
    from scipy import sparse

    n, k = graph.indices.shape
    dist = graph.distances.astype(np.float32)
    scale = np.maximum(np.median(dist[:, 1:], axis=1), np.float32(1e-8))
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = graph.indices.ravel()
    keep = (rows != cols) & (cols >= 0)
    rows, cols = rows[keep], cols[keep]
    weights = np.exp(-(dist.ravel()[keep] ** 2) / (scale[rows] * scale[cols]))
    a = sparse.csr_matrix((weights, (rows, cols)), shape=(n, n))
    return a.maximum(a.T).tocsr()
