import numpy as np
import pytest
from scipy import sparse
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from unhans.spray import analyze_group
from unhans.spray import clustering as clustering_module
from unhans.spray import spectral as spectral_module
from unhans.spray.clustering import merge_parallel_clusters
from unhans.spray.graph import EXACT_LIMIT, affinity_matrix, knn_graph
from unhans.spray.reduction import fit_pca, pca_reduce, row_chunks
from unhans.spray.spectral import spectral_embedding

# (row, col, width, amplitude, share): a centre blob, two side blobs, and a small intense corner "artifact"
PLANTED = [(16, 16, 5.0, 1.0, 0.5), (10, 8, 3.0, 1.0, 0.3), (22, 24, 4.0, 1.0, 0.15), (28, 3, 1.5, 3.0, 0.05)]


def _heatmaps(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1024) nonnegative unit-norm 32x32 'pooled heatmaps' with planted strategies, and the labels."""
    rng = np.random.default_rng(seed)
    shares = np.array([p[4] for p in PLANTED])
    labels = rng.choice(len(PLANTED), size=n, p=shares / shares.sum())
    spec = np.array([p[:4] for p in PLANTED], np.float32)[labels]
    centre = spec[:, :2] + rng.normal(0, 1.5, (n, 2))
    width = spec[:, 2:3] * rng.uniform(0.8, 1.25, (n, 1))
    axis = np.arange(32, dtype=np.float32)
    gy = np.exp(-0.5 * ((axis - centre[:, :1]) / width) ** 2)
    gx = np.exp(-0.5 * ((axis - centre[:, 1:]) / width) ** 2)
    maps = (spec[:, 3] * rng.uniform(0.6, 1.4, n))[:, None, None] * gy[:, :, None] * gx[:, None, :]
    maps = maps.reshape(n, -1) + 0.05 * rng.random((n, 1024), dtype=np.float32) ** 2
    return (maps / np.linalg.norm(maps, axis=1, keepdims=True)).astype(np.float32), labels


def _pooled(features: np.ndarray) -> np.ndarray:
    """32x32 → 8x8 sum-pooled (64 dims), for tests that need many principal components quickly."""
    return features.reshape(len(features), 8, 4, 8, 4).sum(axis=(2, 4)).reshape(len(features), 64)


def test_the_scalable_path_recovers_planted_clusters(monkeypatch):
    monkeypatch.setattr(clustering_module, "SAMPLE_LIMIT", 5_000)  # k-means on a sample, refined on all rows
    features, labels = _heatmaps(EXACT_LIMIT + 5_000)
    result = analyze_group(features, n_neighbors=15, max_clusters=6)
    assert result.graph.reduction is not None and result.graph.reduction.components.shape == (48, 1024)
    assert adjusted_rand_score(labels, result.clusters) >= 0.9
    assert result.embedding.shape == (len(features), 7)


def test_the_sparse_eigensolver_returns_the_smallest_laplacian_eigenvalues(monkeypatch):
    # kNN clusters plus a complete bipartite component: M = D^-1/2 A D^-1/2 has eigenvalue -1
    # there, as large in magnitude as the top ones, so 'LM' would return Laplacian eigenvalue 2.
    # The components also repeat eigenvalue 0, which single-vector Lanczos alone can miss.
    monkeypatch.setattr(spectral_module, "DENSE_LIMIT", 100)  # the sparse path on a small graph
    features, _ = _heatmaps(600, seed=1)
    knn = affinity_matrix(knn_graph(features, 10))
    m = 20
    bipartite = sparse.bmat([[None, np.ones((m, m))], [np.ones((m, m)), None]])
    affinity = sparse.block_diag([knn, bipartite]).tocsr()
    values, vectors = spectral_embedding(affinity, 9)
    degree = np.asarray(affinity.sum(axis=1)).ravel()
    laplacian = np.eye(len(degree)) - affinity.toarray() / np.sqrt(np.outer(degree, degree))
    with threadpool_limits(1):  # a small dense solve: BLAS threads only contend on a loaded machine
        reference = np.linalg.eigvalsh(laplacian)[:9]
    np.testing.assert_allclose(values, reference, atol=1e-6)
    assert values.max() < 1.0 and np.all(np.diff(values) >= -1e-9)
    assert vectors.shape == (len(degree), 9)


def test_pca_reduction_keeps_most_exact_neighbours():
    features, _ = _heatmaps(3_000, seed=2)
    reduced, reduction = pca_reduce(features, 48)
    _, exact = NearestNeighbors(n_neighbors=11).fit(features).kneighbors(features)
    _, approx = NearestNeighbors(n_neighbors=11).fit(reduced).kneighbors(reduced)
    recall = np.mean([len(np.intersect1d(a[1:], b[1:])) / 10 for a, b in zip(exact, approx)])
    assert recall >= 0.8
    assert reduction.explained_variance_ratio > 0.9


def test_streaming_pca_equals_batch_pca_and_streams_from_a_generator():
    features = _pooled(_heatmaps(2_000, seed=3)[0])
    reduction = fit_pca(row_chunks(features, 300), 5)
    _, vectors = np.linalg.eigh(np.cov(features.T.astype(np.float64)))
    overlap = reduction.components.astype(np.float64) @ vectors[:, ::-1][:, :5]
    np.testing.assert_allclose(np.sort(np.linalg.svd(overlap, compute_uv=False)), 1.0, atol=1e-4)  # same subspace
    from_generator, _ = pca_reduce(lambda: row_chunks(features, 700), 5)
    np.testing.assert_allclose(from_generator, reduction.transform(features), atol=1e-5)
    with pytest.raises(ValueError, match="n_components"):
        fit_pca(row_chunks(features), 0)


def test_merging_on_reduced_coordinates_compares_centroids_in_the_original_space():
    features, labels = _heatmaps(1_500, seed=4)
    features = _pooled(features)
    split = np.where((labels == 0) & (np.arange(len(labels)) % 2 == 0), 4, labels)  # one strategy cut in two
    reduced, reduction = pca_reduce(features, 64)
    expected = merge_parallel_clusters(features, split, 0.95)
    np.testing.assert_array_equal(merge_parallel_clusters(reduced, split, 0.95, reduction), expected)
    assert len(np.unique(expected)) == 4
