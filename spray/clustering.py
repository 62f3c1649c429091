"""Clustering the spectral embedding robustly: stability across k, then merging near clusters.

Eigengap alone split one decision strategy into 2-3 clusters on some seeds. So each
eigengap candidate k is clustered several times (k-means on the first k eigenvectors,
different seeds) and the k whose partitions agree best (mean pairwise adjusted Rand
index) wins; then clusters whose mean feature vectors are nearly parallel (cosine ≥
``merge_cosine``) are merged, since they express the same strategy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Clustering:
    labels: np.ndarray          # (N,) cluster id per sample, 0..n_clusters-1, largest cluster first
    n_clusters: int
    k_chosen: int               # k picked before merging
    stability: float            # mean pairwise ARI of repeated k-means at k_chosen
    by_resolution: dict[int, np.ndarray]   # k → k-means labels at every k in 2..max_k (multi-resolution view)


def _kmeans(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(points)


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    ids, counts = np.unique(labels, return_counts=True)
    order = ids[np.argsort(-counts, kind="stable")]
    mapping = np.empty(labels.max() + 1, dtype=np.int64)
    mapping[order] = np.arange(len(order))
    return mapping[labels]


def merge_parallel_clusters(features: np.ndarray, labels: np.ndarray, merge_cosine: float) -> np.ndarray:
    """Greedily merge the most similar pair of clusters while their centroid cosine ≥ merge_cosine."""
    labels = labels.copy()
    while True:
        ids = np.unique(labels)
        if len(ids) < 2:
            return labels
        centroids = np.stack([features[labels == c].mean(0) for c in ids])
        norms = np.linalg.norm(centroids, axis=1, keepdims=True)
        unit = centroids / np.maximum(norms, 1e-12)
        sim = unit @ unit.T
        np.fill_diagonal(sim, -np.inf)
        i, j = np.unravel_index(np.argmax(sim), sim.shape)
        if sim[i, j] < merge_cosine:
            return labels
        labels[labels == ids[j]] = ids[i]


def cluster_embedding(
    embedding: np.ndarray, candidates: list[int], features: np.ndarray, *, seed: int = 0,
    repeats: int = 4, merge_cosine: float = 0.95, max_k: int | None = None,
) -> Clustering:
    """Pick k among ``candidates`` by stability, cluster, merge near-parallel clusters.

    embedding: (N, >= max(candidates)) spectral coordinates, trivial eigenvector first.
    features: (N, D) the normalized features (for merging by centroid direction).
    Also returns the k-means partition at every k in 2..max_k (default: the embedding's
    width), which downstream evidence searches use as a multi-resolution view.
    """
    from sklearn.metrics import adjusted_rand_score

    n = len(embedding)
    best = None
    for k in candidates:
        k = min(k, n)
        if k < 2:
            continue
        points = embedding[:, 1:k] if k > 2 else embedding[:, 1:2]
        runs = [_kmeans(points, k, seed + r) for r in range(repeats)]
        scores = [adjusted_rand_score(runs[a], runs[b]) for a in range(repeats) for b in range(a + 1, repeats)]
        stability = float(np.mean(scores)) if scores else 1.0
        if best is None or stability > best[1] + 1e-9:
            best = (k, stability, runs[0])
    max_k = min(max_k or embedding.shape[1], n - 1, embedding.shape[1])
    by_resolution = {k: _kmeans(embedding[:, 1:max(k, 2)], k, seed) for k in range(2, max_k + 1)}
    if best is None:
        return Clustering(labels=np.zeros(n, dtype=np.int64), n_clusters=1, k_chosen=1, stability=1.0,
                          by_resolution=by_resolution)
    k, stability, labels = best
    merged = _relabel_by_size(merge_parallel_clusters(features, labels, merge_cosine))
    return Clustering(labels=merged, n_clusters=int(merged.max()) + 1, k_chosen=k, stability=stability,
                      by_resolution=by_resolution)
