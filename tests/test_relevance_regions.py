"""Region candidates of any shape (unhans.spray.relevance_regions) and their counterfactual check."""
import numpy as np

from unhans.spray import ClusterEvidence, confirm_region, region_evidence, relevance_shares
from unhans.spray.relevance_regions import region_pixels


def _class_with_edge_line(n: int = 120, tagged: int = 48, seed: int = 0):
    """Relevance maps (n, 32, 32) of one class: a blob in the middle (the class feature, at a varying
    place) for every sample; the tagged ones also put relevance on a 1-pixel line along the top edge."""
    rng = np.random.default_rng(seed)
    maps = rng.random((n, 32, 32)) * 0.02
    for i in range(n):
        r, c = rng.integers(10, 18, 2)
        maps[i, r:r + 8, c:c + 8] += 1.0
    is_tagged = np.zeros(n, bool)
    is_tagged[rng.choice(n, tagged, replace=False)] = True
    maps[is_tagged, 0, 4:28] += 2.0
    return maps, is_tagged


def test_the_region_of_an_edge_line_is_found_with_its_members():
    maps, tagged = _class_with_edge_line()
    shares = relevance_shares(maps)
    rough = np.where(tagged & (np.arange(len(tagged)) % 2 == 0), 1, 0)  # SpRAy split the group in two
    other = np.full((32, 32), 1 / 1024)
    [(evidence, scores)] = region_evidence(shares, {2: rough, 3: np.arange(len(tagged)) % 3}, 0, other_mean_share=other)
    mask = np.asarray(evidence.pattern_weights, bool)
    assert mask[0, 6:26].all() and mask[2:].sum() == 0     # the line, and nothing below it
    members = np.zeros(len(tagged), bool)
    members[evidence.members] = True
    np.testing.assert_array_equal(members, tagged)          # refinement merged the split group
    assert scores[tagged].min() > scores[~tagged].max()
    assert evidence.relevance_evidence > 3 and evidence.separation > 0.5  # the rest holds the other half


def test_cross_fitting_keeps_a_random_split_of_a_plain_class_low():
    maps, tagged = _class_with_edge_line(tagged=0)
    clean = region_evidence(relevance_shares(maps), {2: np.arange(120) % 2}, 0,
                            other_mean_share=np.full((32, 32), 1 / 1024))
    maps, tagged = _class_with_edge_line()
    [(planted, _)] = region_evidence(relevance_shares(maps), {2: tagged.astype(int)}, 0,
                                     other_mean_share=np.full((32, 32), 1 / 1024))
    assert not clean or clean[0][0].score < 0.2 * planted.score


def test_both_halves_of_a_split_class_are_candidates():
    maps, tagged = _class_with_edge_line()
    found = region_evidence(relevance_shares(maps), {2: tagged.astype(int)}, 0,
                            other_mean_share=np.full((32, 32), 1 / 1024), count=2)
    assert len(found) == 2
    assert set(found[0][0].members) == set(np.flatnonzero(tagged))  # the line's group scores first
    assert (found[1][0].resolution, found[1][0].cluster) == (2, 0)    # then the other half


def test_region_pixels_scales_and_grows_the_mask():
    evidence = ClusterEvidence(class_id=0, resolution=2, cluster=1, size=5, size_fraction=0.5, window=(0, 0, 2, 4),
                               concentration=0.5, baseline=0.0, dataset_baseline=0.0, relevance_evidence=1.0,
                               pattern_constancy=0.0, pattern_distinctiveness=0.0, mislabel_fraction=0.0, score=1.0,
                               pattern_weights=[[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]], placement="region",
                               search_factor=2)
    assert region_pixels(evidence, 6, 8, dilate=0).sum() == 4
    assert region_pixels(evidence, 6, 8, dilate=1).sum() == 4 + 8


def test_pasting_the_region_confirms_a_shortcut_and_not_a_neutral_region():
    rng = np.random.default_rng(1)
    n = 300
    classes = np.repeat([0, 1, 2], n // 3)
    images = rng.random((n, 1, 16, 16)).astype(np.float32) * 0.2
    members = np.flatnonzero(classes == 0)[:50]
    images[members, 0, 0, 2:14] = 1.0                        # the line the model reads as class 0

    def predict(x):
        line = x[:, 0, 0, 2:14].mean(1)
        logits = np.stack([8 * (line - 0.5), np.zeros(len(x)), np.zeros(len(x))], 1)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    mask = np.zeros((16, 16), np.uint8)
    mask[0, 2:14] = 1
    evidence = ClusterEvidence(class_id=0, resolution=2, cluster=1, size=50, size_fraction=0.5, window=(0, 2, 1, 14),
                               concentration=0.5, baseline=0.0, dataset_baseline=0.0, relevance_evidence=1.0,
                               pattern_constancy=0.0, pattern_distinctiveness=0.0, mislabel_fraction=0.0, score=1.0,
                               members=members.tolist(), pattern_weights=mask.tolist(), placement="region")
    found = confirm_region(predict, images, classes, evidence, recipients=100, bootstrap=500)
    assert found.confirmed and found.effect > 0.3 and found.ci_low > 0.3
    neutral = mask * 0
    neutral[10:12, 10:12] = 1
    evidence.pattern_weights = neutral.tolist()
    assert not confirm_region(predict, images, classes, evidence, recipients=100, bootstrap=500).confirmed
