"""SpRAy for one group of explanations (one class): graph → spectrum → clusters (→ map).

Every stage picks its scalable path by the number of samples, so a class of 10^6
explanations needs no other call: the kNN search (:mod:`spray.graph`: PCA + NN-descent
above ``EXACT_LIMIT``), the eigensolver (:mod:`spray.spectral`: deflated Lanczos above
``DENSE_LIMIT``) and k-means (:mod:`spray.clustering`: sample fit + full refinement above
``SAMPLE_LIMIT``). Small groups take the exact paths.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .clustering import cluster_embedding
from .eigengap import eigengap, eigengap_candidates
from .graph import KnnGraph, affinity_matrix, knn_graph
from .reduction import LinearReduction
from .spectral import spectral_embedding


@dataclass
class GroupAnalysis:
    """SpRAy result of one group: cluster per sample, the spectrum, and the kNN graph."""

    clusters: np.ndarray            # (N,) cluster id, 0 = largest
    n_clusters: int
    eigenvalues: np.ndarray         # Laplacian eigenvalues, ascending
    k_candidates: list[int]
    k_chosen: int
    stability: float
    gap: float                      # eigengap after k_chosen
    graph: KnnGraph
    by_resolution: dict[int, np.ndarray]   # k → partition at every k in 2..max_clusters
    embedding: np.ndarray | None = None    # (N, max_clusters + 1) spectral coordinates, trivial column first


def analyze_group(features: np.ndarray, *, n_neighbors: int = 10, max_clusters: int = 8,
                  seed: int = 0, merge_cosine: float = 0.95, reduction: LinearReduction | None = None) -> GroupAnalysis:
    """Spectral relevance analysis of normalized features (N, D) (Lapuschkin et al. 2019).

    ``reduction``: pass it when ``features`` are already PCA coordinates (e.g. from
    :func:`spray.reduction.pca_reduce` over heatmaps streamed from a store); clusters are
    then merged by the directions of their centroids in the original space.
    """
    n = len(features)
    if n < 3:
        graph = knn_graph(features, max(1, n)) if n else KnnGraph(np.zeros((0, 1), np.int64), np.zeros((0, 1), np.float32))
        return GroupAnalysis(np.zeros(n, np.int64), 1 if n else 0, np.zeros(n), [1], 1, 1.0, 0.0, graph, {})
    graph = knn_graph(features, n_neighbors, seed)
    values, vectors = spectral_embedding(affinity_matrix(graph), max_clusters + 1, seed)
    candidates = eigengap_candidates(values, max_clusters)
    clustering = cluster_embedding(vectors, candidates, features, seed=seed, merge_cosine=merge_cosine,
                                   max_k=max_clusters, reduction=reduction)
    return GroupAnalysis(
        clusters=clustering.labels, n_clusters=clustering.n_clusters, eigenvalues=values,
        k_candidates=candidates, k_chosen=clustering.k_chosen, stability=clustering.stability,
        gap=eigengap(values, clustering.k_chosen), graph=graph, by_resolution=clustering.by_resolution,
        embedding=vectors,
    )
