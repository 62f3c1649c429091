"""A sparse k-nearest-neighbour graph of the features, shared by the spectral embedding and UMAP."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXACT_LIMIT = 20_000  # below this many samples the exact search is as fast as NN-descent


@dataclass
class KnnGraph:
    """``indices[i]`` are the k nearest neighbours of sample i (itself first), with ``distances``."""

    indices: np.ndarray
    distances: np.ndarray

    @property
    def n_neighbors(self) -> int:
        return self.indices.shape[1]


def knn_graph(features: np.ndarray, n_neighbors: int, seed: int = 0) -> KnnGraph:
    """Euclidean kNN graph; exact below :data:`EXACT_LIMIT` samples, pynndescent above.

    ``n_neighbors`` counts the sample itself (UMAP's convention), clipped to N.
    """
    n = len(features)
    k = max(2, min(n_neighbors, n))
    if n <= EXACT_LIMIT:
        from sklearn.neighbors import NearestNeighbors

        dist, idx = NearestNeighbors(n_neighbors=k).fit(features).kneighbors(features)
    else:
        from pynndescent import NNDescent

        index = NNDescent(features, n_neighbors=k, random_state=seed, low_memory=True)
        idx, dist = index.neighbor_graph
    return KnnGraph(indices=idx.astype(np.int64), distances=dist.astype(np.float32))


def affinity_matrix(graph: KnnGraph):
    """Symmetric sparse affinities with a self-tuning Gaussian kernel (Zelnik-Manor & Perona).

    a_ij = exp(-d_ij^2 / (s_i s_j)), s_i the distance to i's median neighbour; the kNN
    relation is symmetrized by max. Self-loops are dropped.
    """
    from scipy import sparse

    n, k = graph.indices.shape
    scale = np.maximum(np.median(graph.distances[:, 1:], axis=1), 1e-8)
    rows = np.repeat(np.arange(n), k)
    cols = graph.indices.ravel()
    d = graph.distances.ravel()
    weights = np.exp(-(d ** 2) / (scale[rows] * scale[cols]))
    keep = rows != cols
    a = sparse.csr_matrix((weights[keep], (rows[keep], cols[keep])), shape=(n, n))
    return a.maximum(a.T).tocsr()
