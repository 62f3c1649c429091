"""Clustering the spectral embedding robustly: stability across k, then merging near clusters.

Eigengap alone split one decision strategy into 2-3 clusters on some seeds. So each
eigengap candidate k is clustered several times (k-means on the first k eigenvectors,
different seeds) and the k whose partitions agree best (mean pairwise adjusted Rand
index) wins; then clusters whose mean feature vectors are nearly parallel (cosine ≥
``merge_cosine``) are merged, since they express the same strategy.

Above :data:`SAMPLE_LIMIT` samples each k-means run is fitted (Lloyd, several restarts)
on a uniform sample of :data:`SAMPLE_LIMIT` rows and then refined by a few Lloyd
iterations over all rows started from the sample's centres: the restarts, which dominate
k-means' cost, run on the sample, and every row is still assigned by the full data.
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


SAMPLE_LIMIT = 50_000    # above this many samples, k-means restarts run on a sample of this size
REFINE_ITERATIONS = 20   # full-data Lloyd iterations after the sample fit


def _kmeans(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    if len(points) <= SAMPLE_LIMIT:
        return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(points)
    sample = np.random.default_rng(seed).choice(len(points), SAMPLE_LIMIT, replace=False)
    centres = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(points[sample]).cluster_centers_
    return KMeans(n_clusters=k, init=centres, n_init=1, max_iter=REFINE_ITERATIONS,
                  random_state=seed).fit_predict(points)


def adjusted_rand(a: np.ndarray, b: np.ndarray) -> float:
    """The adjusted Rand index of two partitions into labels 0..k-1, by the same integer pair counts
    and formula as scikit-learn's ``adjusted_rand_score`` (so the same value, to the bit), without its
    input checks, which cost about 5 ms a call: the stability of k takes dozens of calls per class."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    n = len(a)
    width = int(b.max()) + 1 if n else 1
    contingency = np.bincount(a * width + b, minlength=(int(a.max()) + 1 if n else 1) * width).reshape(-1, width)
    n_c, n_k = contingency.sum(axis=1), contingency.sum(axis=0)
    sum_squares = int((contingency ** 2).sum())
    tp = sum_squares - n
    fp = int((contingency @ n_k).sum()) - sum_squares
    fn = int((contingency.T @ n_c).sum()) - sum_squares
    tn = n * n - fp - fn - sum_squares
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    ids, counts = np.unique(labels, return_counts=True)
    order = ids[np.argsort(-counts, kind="stable")]
    mapping = np.empty(labels.max() + 1, dtype=np.int64)
    mapping[order] = np.arange(len(order))
    return mapping[labels]


def cluster_sums(features: np.ndarray, labels: np.ndarray, rows: int = 65_536) -> np.ndarray:
    """(labels.max() + 1, D) float64 sum of the feature rows per label, in row chunks (no copies of clusters)."""
    from scipy import sparse

    n_labels = int(labels.max()) + 1
    sums = np.zeros((n_labels, features.shape[1]), np.float64)
    for start in range(0, len(labels), rows):
        part = labels[start:start + rows]
        onehot = sparse.csr_matrix((np.ones(len(part)), (part, np.arange(len(part)))), shape=(n_labels, len(part)))
        sums += onehot @ np.asarray(features[start:start + rows], dtype=np.float64)
    return sums


def merge_parallel_clusters(features: np.ndarray, labels: np.ndarray, merge_cosine: float,
                            reduction=None) -> np.ndarray:
    """Greedily merge the most similar pair of clusters while their centroid cosine ≥ merge_cosine.

    ``reduction``: if ``features`` are coordinates of a :class:`~spray.reduction.LinearReduction`,
    centroids are lifted back to the original space before comparing (PCA coordinates are
    centred, so their cosines are not those of the features).
    """
    labels = labels.copy()
    sums = cluster_sums(features, labels)
    counts = np.bincount(labels, minlength=len(sums)).astype(np.float64)
    while True:
        ids = np.flatnonzero(counts)
        if len(ids) < 2:
            return labels
        centroids = sums[ids] / counts[ids, None]
        if reduction is not None:
            centroids = reduction.inverse_transform(centroids)
        norms = np.linalg.norm(centroids, axis=1, keepdims=True)
        unit = centroids / np.maximum(norms, 1e-12)
        sim = unit @ unit.T
        np.fill_diagonal(sim, -np.inf)
        i, j = np.unravel_index(np.argmax(sim), sim.shape)
        if sim[i, j] < merge_cosine:
            return labels
        a, b = ids[i], ids[j]
        labels[labels == b] = a
        sums[a] += sums[b]
        counts[a] += counts[b]
        sums[b], counts[b] = 0.0, 0.0


def cluster_embedding(
    embedding: np.ndarray, candidates: list[int], features: np.ndarray, *, seed: int = 0,
    repeats: int = 4, merge_cosine: float = 0.95, max_k: int | None = None, reduction=None,
) -> Clustering:
    """Pick k among ``candidates`` by stability, cluster, merge near-parallel clusters.

    embedding: (N, >= max(candidates)) spectral coordinates, trivial eigenvector first.
    features: (N, D) the normalized features (for merging by centroid direction), or their
    coordinates under ``reduction`` (a :class:`~spray.reduction.LinearReduction`).
    Also returns the k-means partition at every k in 2..max_k (default: the embedding's
    width), which downstream evidence searches use as a multi-resolution view.
    """
    from threadpoolctl import threadpool_limits

    n = len(embedding)
    best = None
    first_runs = {}   # k → the seed-`seed` partition, shared with by_resolution
    # k-means runs many short parallel loops: on a shared 2-core machine their OpenMP threads
    # spin against other processes (40x slower, measured), while one thread loses at most 2x.
    with threadpool_limits(1):
        for k in candidates:
            k = min(k, n)
            if k < 2:
                continue
            points = embedding[:, 1:k] if k > 2 else embedding[:, 1:2]
            runs = [_kmeans(points, k, seed + r) for r in range(repeats)]
            first_runs[k] = runs[0]
            scores = [adjusted_rand(runs[a], runs[b]) for a in range(repeats) for b in range(a + 1, repeats)]
            stability = float(np.mean(scores)) if scores else 1.0
            if best is None or stability > best[1] + 1e-9:
                best = (k, stability, runs[0])
        max_k = min(max_k or embedding.shape[1], n - 1, embedding.shape[1])
        by_resolution = {k: first_runs[k] if k in first_runs else _kmeans(embedding[:, 1:max(k, 2)], k, seed)
                         for k in range(2, max_k + 1)}
    if best is None:
        return Clustering(labels=np.zeros(n, dtype=np.int64), n_clusters=1, k_chosen=1, stability=1.0,
                          by_resolution=by_resolution)
    k, stability, labels = best
    merged = _relabel_by_size(merge_parallel_clusters(features, labels, merge_cosine, reduction))
    return Clustering(labels=merged, n_clusters=int(merged.max()) + 1, k_chosen=k, stability=stability,
                      by_resolution=by_resolution)
