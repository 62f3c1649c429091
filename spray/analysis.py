"""SpRAy for one group of explanations (one class): graph → spectrum → clusters (→ map)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .clustering import cluster_embedding
from .eigengap import eigengap, eigengap_candidates
from .graph import KnnGraph, affinity_matrix, knn_graph
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


def analyze_group(features: np.ndarray, *, n_neighbors: int = 10, max_clusters: int = 8,
                  seed: int = 0, merge_cosine: float = 0.95) -> GroupAnalysis:
    """Spectral relevance analysis of normalized features (N, D) (Lapuschkin et al. 2019)."""
    n = len(features)
    if n < 3:
        graph = knn_graph(features, max(1, n)) if n else KnnGraph(np.zeros((0, 1), np.int64), np.zeros((0, 1), np.float32))
        return GroupAnalysis(np.zeros(n, np.int64), 1 if n else 0, np.zeros(n), [1], 1, 1.0, 0.0, graph, {})
    graph = knn_graph(features, n_neighbors, seed)
    values, vectors = spectral_embedding(affinity_matrix(graph), max_clusters + 1, seed)
    candidates = eigengap_candidates(values, max_clusters)
    clustering = cluster_embedding(vectors, candidates, features, seed=seed, merge_cosine=merge_cosine,
                                   max_k=max_clusters)
    return GroupAnalysis(
        clusters=clustering.labels, n_clusters=clustering.n_clusters, eigenvalues=values,
        k_candidates=candidates, k_chosen=clustering.k_chosen, stability=clustering.stability,
        gap=eigengap(values, clustering.k_chosen), graph=graph, by_resolution=clustering.by_resolution,
    )
