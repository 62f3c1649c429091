import numpy as np

from spray import (
    analyze_group, cluster_evidence, flag_clusters, normalize_features, pool_by_group, pool_heatmaps,
    rank_classes, region_relevance, relevance_shares,
)
from spray.eigengap import eigengap_candidates
from spray.graph import affinity_matrix, knn_graph
from spray.spectral import spectral_embedding


def _heatmaps(n_normal: int, n_tagged: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth 'digit' relevance in the centre; tagged samples add a strong blob in a corner."""
    rng = np.random.default_rng(seed)
    n = n_normal + n_tagged
    maps = np.zeros((n, 1, 32, 32), np.float32)
    yy, xx = np.mgrid[:32, :32]
    for i in range(n):
        cy, cx = 16 + rng.normal(0, 2), 16 + rng.normal(0, 2)
        maps[i, 0] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 40) + 0.1 * rng.random((32, 32))
    tagged = np.zeros(n, bool)
    tagged[n_normal:] = True
    maps[tagged, 0, 26:31, 1:8] += 1.5 + 0.3 * rng.random((n_tagged, 5, 7))
    return maps, tagged


def test_pooling_conserves_relevance_and_normalization_gives_unit_rows():
    maps, _ = _heatmaps(10, 0)
    pooled = pool_heatmaps(maps, 8, relevance="signed")
    assert pooled.shape == (10, 8, 8)
    np.testing.assert_allclose(pooled.sum((1, 2)), maps.sum((1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(normalize_features(pooled, "l2"), axis=1), 1, rtol=1e-5)
    assert np.abs(normalize_features(pooled, "maxabs")).max() <= 1 + 1e-6


def test_spectral_embedding_takes_the_smallest_laplacian_eigenvalues():
    maps, _ = _heatmaps(40, 20)
    graph = knn_graph(normalize_features(pool_heatmaps(maps, 8)), 10)
    values, vectors = spectral_embedding(affinity_matrix(graph), 5)
    assert np.all(np.diff(values) >= -1e-9)
    assert abs(values[0]) < 1e-8 and np.all(values >= -1e-8) and np.all(values <= 2 + 1e-8)
    assert vectors.shape == (60, 5)


def test_two_planted_groups_give_an_eigengap_at_two():
    maps, _ = _heatmaps(60, 30)
    graph = knn_graph(normalize_features(pool_heatmaps(maps, 8)), 10)
    values, _ = spectral_embedding(affinity_matrix(graph), 9)
    assert eigengap_candidates(values, 8)[0] == 2


def test_a_planted_cluster_is_recovered():
    maps, tagged = _heatmaps(90, 40, seed=3)
    result = analyze_group(normalize_features(pool_heatmaps(maps, 8)), n_neighbors=10, max_clusters=6)
    tag_cluster = np.bincount(result.clusters[tagged]).argmax()
    in_cluster = result.clusters == tag_cluster
    assert (in_cluster & tagged).sum() / in_cluster.sum() >= 0.95  # purity
    assert (in_cluster & tagged).sum() / tagged.sum() >= 0.95      # recall


def test_clever_hans_evidence_finds_the_corner_window_and_flags_only_the_tagged_cluster():
    maps, tagged = _heatmaps(90, 40, seed=1)
    clusters = tagged.astype(int)
    evidence = cluster_evidence(relevance_shares(maps), clusters, class_id=3, window=8)
    flagged = flag_clusters(evidence)
    assert [e.cluster for e in flagged] == [1]
    r0, c0, r1, c1 = flagged[0].window
    assert r0 <= 26 and r1 >= 31 and c0 <= 1 and c1 >= 8  # the window covers the tag
    assert flagged[0].consistency > 0.9
    assert rank_classes(evidence)[0][0] == 3


def test_mislabeled_members_discount_the_score():
    maps, tagged = _heatmaps(90, 40, seed=1)
    shares = relevance_shares(maps)
    clean = cluster_evidence(shares, tagged.astype(int), 3, window=8)[1]
    mislabeled = cluster_evidence(shares, tagged.astype(int), 3, window=8, mislabel_flags=tagged.astype(float))[1]
    assert mislabeled.score < 0.05 * clean.score


def test_no_planted_artifact_means_no_flag():
    maps, _ = _heatmaps(130, 0, seed=2)
    result = analyze_group(normalize_features(pool_heatmaps(maps, 8)), n_neighbors=10, max_clusters=6)
    assert flag_clusters(cluster_evidence(relevance_shares(maps), result.clusters, 0, window=8)) == []


def test_relevance_pooling_conserves_relevance_per_group():
    maps, tagged = _heatmaps(20, 10)
    regions = region_relevance(maps, 4)
    np.testing.assert_allclose(regions.sum((1, 2)), maps.sum((1, 2, 3)), rtol=1e-5)
    pooled = pool_by_group(regions, tagged.astype(int))
    np.testing.assert_allclose(pooled[1]["relevance"].sum(), maps[tagged].sum(), rtol=1e-5)
    assert pooled[1]["share"][3, 0] > pooled[0]["share"][3, 0]  # the tag's corner region
