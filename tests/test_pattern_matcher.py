"""The recurring search's matcher and screen, against direct computations."""
import numpy as np

from unhans.spray import ClusterEvidence, recurring_distances, recurring_screen
from unhans.spray.recurring_patterns import PatternMatcher, match, recurring_distances_many


def _direct(images, pattern, weights, std):
    """Weighted RMS difference (σ_x) of the pattern from every window, one window at a time: (n, P, Q)."""
    c, h, w = pattern.shape
    wts = np.broadcast_to(weights, pattern.shape) / (weights.sum() * c)
    n, _, height, width = images.shape
    out = np.empty((n, height - h + 1, width - w + 1))
    for r in range(height - h + 1):
        for q in range(width - w + 1):
            diff = images[:, :, r:r + h, q:q + w] - pattern
            out[:, r, q] = np.sqrt((wts * diff ** 2).sum(axis=(1, 2, 3)))
    return out / std


def test_the_matcher_gives_every_window_its_weighted_distance_and_finds_a_pasted_copy():
    rng = np.random.default_rng(0)
    images = rng.random((7, 3, 12, 11)).astype(np.float32)
    patterns = rng.random((2, 3, 4, 3)).astype(np.float32)
    weights = rng.random((2, 4, 3)).astype(np.float32)
    weights[1, 0] = 0.0  # a row that does not count
    images[5, :, 6:10, 2:5] = patterns[1]
    images[5, :, 6, 2:5] = 0.9  # differs only where the weight is 0: still an exact copy
    maps = PatternMatcher(images, 4, 3).distance_maps(patterns, weights, pixel_std=0.5)
    for s in range(2):
        direct = _direct(images.astype(np.float64), patterns[s], weights[s], 0.5)
        # Σ w x² − 2 Σ w p x + Σ w p² in float32 on values in [0, 1]: exact to well within 1e-3 σ_x
        assert np.abs(maps[..., s].reshape(direct.shape) - direct).max() < 1e-3
    dist, pos = match(images, patterns, weights, pixel_std=0.5)
    assert dist[1, 5] < 2e-3 and tuple(pos[1, 5]) == (6, 2)


def test_candidates_matched_together_get_what_each_gets_alone():
    rng = np.random.default_rng(1)
    images = rng.random((9, 1, 10, 10)).astype(np.float32)

    def candidate(class_id, size):
        return ClusterEvidence(class_id=class_id, resolution=0, cluster=-1, size=1, size_fraction=0.1,
                               window=(0, 0, size, size), concentration=0.0, baseline=0.0, dataset_baseline=0.0,
                               relevance_evidence=0.0, pattern_constancy=0.0, pattern_distinctiveness=0.0,
                               mislabel_fraction=0.0, score=1.0, placement="recurring", search_factor=1,
                               pattern=rng.random((1, size, size)).tolist(),
                               pattern_weights=rng.random((size, size)).tolist())

    candidates = [candidate(0, 3), candidate(1, 4), candidate(2, 3)]
    together = recurring_distances_many(images, candidates, pixel_std=0.3)
    for evidence, (dist, pos) in zip(candidates, together):
        alone_dist, alone_pos = recurring_distances(images, evidence, pixel_std=0.3)
        assert np.allclose(dist, alone_dist, atol=1e-4) and np.array_equal(pos, alone_pos)


def test_the_screen_ranks_a_class_whose_relevance_gathers_in_one_window_above_spread_classes():
    rng = np.random.default_rng(2)
    other_mean = np.full((16, 16), 1 / 256)

    def shares(tagged_fraction):
        maps = rng.random((50, 16, 16))
        for i in range(int(tagged_fraction * 50)):  # a pattern anywhere draws half of the sample's relevance
            r, c = rng.integers(0, 12, 2)
            maps[i, r:r + 4, c:c + 4] += maps[i].sum() / 16
        return maps / maps.sum(axis=(1, 2), keepdims=True)

    spread, tagged = recurring_screen(shares(0.0), other_mean, 4), recurring_screen(shares(0.3), other_mean, 4)
    assert tagged > spread + 0.2 and tagged > 0.4
