import numpy as np

from unhans.spray import (
    analyze_group, class_evidence, flag_classes, normalize_features, pattern_carriers, pool_by_group,
    pool_heatmaps, rank_classes, region_relevance, relevance_shares, sample_artifact_scores,
)
from unhans.spray.eigengap import eigengap_candidates
from unhans.spray.graph import affinity_matrix, knn_graph
from unhans.spray.spectral import spectral_embedding


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


def _stamped(n_normal: int, n_tagged: int, seed: int = 0):
    """Images with a varying 'digit' blob; tagged ones carry a fixed 4x7 pattern in a corner.

    Relevance follows the ink, and tagged images put extra relevance on the tag.
    """
    rng = np.random.default_rng(seed)
    maps, tagged = _heatmaps(n_normal, n_tagged, seed)
    yy, xx = np.mgrid[:32, :32]
    images = np.zeros((len(maps), 1, 32, 32), np.float32)
    for i in range(len(maps)):
        cy, cx, r = 16 + rng.normal(0, 2), 16 + rng.normal(0, 2), rng.uniform(5, 9)
        images[i, 0] = np.clip(1.2 - np.abs(np.hypot(yy - cy, xx - cx) - r) / 1.5, 0, 1) * rng.uniform(0.6, 1)
    tag = np.array([[1, 1, 1, 1, 1, 1, 1], [1, 0, 1, 0, 1, 0, 1], [1, 0, 0, 1, 0, 0, 1], [1, 1, 1, 1, 1, 1, 1]])
    images[tagged, 0, 27:31, 1:8] = tag
    return maps, images, tagged


def _candidate(maps, images, clusterings, other_share=None, flags=None):
    shares = relevance_shares(maps)
    other = np.full((32, 32), 1 / 1024) if other_share is None else other_share
    return class_evidence(shares, images, clusterings, 3, other_mean_share=other, pixel_std=float(images.std()),
                          window=8, mislabel_flags=flags)


def test_clever_hans_candidate_finds_the_tag_window_and_its_carriers():
    maps, images, tagged = _stamped(90, 40, seed=1)
    # a deliberately impure, split clustering: the refinement must still recover the tagged group
    rough = np.where(tagged & (np.arange(len(tagged)) % 3 == 0), 1, 0)
    rough[:5] = 1
    evidence = _candidate(maps, images, {2: rough})
    r0, c0, r1, c1 = evidence.window
    assert r0 <= 27 and r1 >= 31 and c0 <= 1 and c1 >= 8  # the window covers the tag
    members = np.zeros(len(tagged), bool)
    members[evidence.members] = True
    np.testing.assert_array_equal(members, tagged)
    assert evidence.pattern_constancy > 0.8 and evidence.pattern_distinctiveness > 0.5
    assert flag_classes([evidence]) == [evidence]
    assert rank_classes([evidence], [1, 3])[0][0] == 3
    scores = sample_artifact_scores(relevance_shares(maps), images, evidence, float(images.std()))
    assert scores[tagged].min() > scores[~tagged].max()


def test_the_same_relevance_without_a_constant_pattern_is_not_flagged():
    maps, images, tagged = _stamped(90, 40, seed=1)
    stamped = _candidate(maps, images, {2: tagged.astype(int)})
    rng = np.random.default_rng(0)
    images[tagged, 0, 27:31, 1:8] = rng.random((tagged.sum(), 4, 7))  # noise instead of a stamp
    evidence = _candidate(maps, images, {2: tagged.astype(int)})
    assert evidence.score < 0.3 * stamped.score
    assert flag_classes([evidence]) == []


def test_mislabeled_members_discount_the_score():
    maps, images, tagged = _stamped(90, 40, seed=1)
    clean = _candidate(maps, images, {2: tagged.astype(int)})
    mislabeled = _candidate(maps, images, {2: tagged.astype(int)}, flags=tagged.astype(float))
    assert mislabeled.score < 0.05 * clean.score


def test_no_planted_artifact_means_no_flag():
    maps, images, _ = _stamped(130, 0, seed=2)
    result = analyze_group(normalize_features(pool_heatmaps(maps, 8)), n_neighbors=10, max_clusters=6)
    evidence = _candidate(maps, images, result.by_resolution)
    assert evidence is None or flag_classes([evidence]) == []


def test_pattern_carriers_finds_the_tag_in_other_classes():
    maps, images, tagged = _stamped(90, 40, seed=1)
    evidence = _candidate(maps, images, {2: tagged.astype(int)})
    other_maps, other_images, other_tagged = _stamped(50, 10, seed=5)
    carriers = pattern_carriers(other_images, evidence, float(images.std()))
    np.testing.assert_array_equal(carriers, other_tagged)
    relied_on = pattern_carriers(other_images, evidence, float(images.std()), shares=relevance_shares(other_maps))
    np.testing.assert_array_equal(relied_on, other_tagged)  # the synthetic maps put relevance on every tag


def test_relevance_pooling_conserves_relevance_per_group():
    maps, tagged = _heatmaps(20, 10)
    regions = region_relevance(maps, 4)
    np.testing.assert_allclose(regions.sum((1, 2)), maps.sum((1, 2, 3)), rtol=1e-5)
    pooled = pool_by_group(regions, tagged.astype(int))
    np.testing.assert_allclose(pooled[1]["relevance"].sum(), maps[tagged].sum(), rtol=1e-5)
    assert pooled[1]["share"][3, 0] > pooled[0]["share"][3, 0]  # the tag's corner region


def _corner_model(weight: float):
    """Two classes; the corner tag pushes class 1 with ``weight``, the centre ink pushes class 0."""
    def predict_proba(x: np.ndarray) -> np.ndarray:
        tag = x[:, 0, 27:31, 1:8].mean(axis=(1, 2))
        ink = x[:, 0, 10:22, 10:22].mean(axis=(1, 2))
        logit = weight * tag - 2.0 * ink
        p1 = 1 / (1 + np.exp(-logit))
        return np.stack([1 - p1, p1], axis=1)
    return predict_proba


def test_counterfactual_confirms_a_pattern_the_model_relies_on_and_rejects_one_it_ignores():
    from unhans.spray import confirm_candidate

    _, images, tagged = _stamped(90, 40, seed=1)
    classes = np.where(tagged | (np.arange(len(tagged)) % 2 == 0), 1, 0)  # class 1: tagged + some untagged
    members = np.flatnonzero(tagged)
    window = (24, 0, 32, 8)
    relied = confirm_candidate(_corner_model(12.0), images, classes, members, window, 1,
                               pixel_std=float(images.std()), recipients=40)
    ignored = confirm_candidate(_corner_model(0.0), images, classes, members, window, 1,
                                pixel_std=float(images.std()), recipients=40)
    assert relied.confirmed and relied.ci_low > 0.03 and relied.flip_rate > relied.control_flip_rate
    assert not ignored.confirmed and abs(ignored.effect) < 1e-6


def test_recurring_counterfactual_pastes_members_pattern_where_they_carry_it():
    """The same model, a recurring candidate (the tag's window at each member's position): confirmed
    when the model relies on the corner tag, not when it ignores it."""
    from unhans.spray import ClusterEvidence, confirm_recurring

    _, images, tagged = _stamped(90, 40, seed=1)
    classes = np.where(tagged | (np.arange(len(tagged)) % 2 == 0), 1, 0)
    members = np.flatnonzero(tagged)
    evidence = ClusterEvidence(class_id=1, resolution=0, cluster=-1, size=len(members), size_fraction=0.5,
                               window=(24, 0, 32, 8), concentration=0.3, baseline=0.05, dataset_baseline=0.05,
                               relevance_evidence=2.0, pattern_constancy=1.0, pattern_distinctiveness=2.0,
                               mislabel_fraction=0.0, score=2.0, members=members.tolist(), placement="recurring",
                               pattern=images[members[0], :, 24:32, 0:8].tolist(),
                               pattern_weights=np.ones((8, 8)).tolist(), positions=[[24, 0]] * len(members))
    std = float(images.std())
    relied = confirm_recurring(_corner_model(12.0), images, classes, evidence, pixel_std=std, recipients=40)
    ignored = confirm_recurring(_corner_model(0.0), images, classes, evidence, pixel_std=std, recipients=40)
    assert relied.confirmed and relied.ci_low > 0.03 and relied.flip_rate > relied.control_flip_rate
    assert not ignored.confirmed and abs(ignored.effect) < 1e-6


def test_a_class_with_one_or_two_samples_is_analyzed_without_error():
    from unhans.spray.analysis import analyze_group

    for n in (1, 2):
        analysis = analyze_group(np.random.default_rng(0).normal(size=(n, 16)))
        assert analysis.n_clusters == 1 and len(analysis.clusters) == n


def test_pooling_a_plane_that_is_not_a_multiple_of_the_grid_keeps_every_bit_of_relevance():
    from unhans.spray.preprocessing import pool_heatmaps

    maps = np.random.default_rng(0).normal(size=(3, 6, 50)).astype(np.float32)  # a 6-feature x 50-step series
    pooled = pool_heatmaps(maps, 8, "signed")
    assert pooled.shape == (3, 6, 8)
    np.testing.assert_allclose(pooled.sum((1, 2)), maps.sum((1, 2)), rtol=1e-5)
    np.testing.assert_allclose(pooled[:, :, 0], maps[:, :, :7].sum(2), rtol=1e-5)  # 50 = 2 cells of 7 + 6 of 6
    square = np.abs(maps[:, :, :48].repeat(8, axis=1)[:, :48])
    np.testing.assert_allclose(pool_heatmaps(square, 8), square.reshape(3, 8, 6, 8, 6).sum((2, 4)), rtol=1e-5)


def test_the_stability_index_is_scikit_learns_adjusted_rand_score_to_the_bit():
    from sklearn.metrics import adjusted_rand_score

    from unhans.spray.clustering import adjusted_rand

    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 200))
        a, b = rng.integers(0, rng.integers(1, 9), n), rng.integers(0, rng.integers(1, 9), n)
        if rng.random() < 0.3:
            b = a[rng.permutation(n)] if rng.random() < 0.5 else a.copy()
        assert adjusted_rand(a, b) == adjusted_rand_score(a, b)
