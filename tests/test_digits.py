import numpy as np
import pytest

from unhans.pipeline.config import DatasetConfig, from_dict
from unhans.pipeline.defects import ASYMMETRIC_PAIRS, TAG_PATTERN, TEXTURE_AMPLITUDE, flip_labels, tag_slices
from unhans.pipeline.digits import load_digits_dataset


def _config(**dataset) -> DatasetConfig:
    return from_dict({"dataset": dataset}).dataset


@pytest.fixture(scope="module")
def default():
    return load_digits_dataset(_config())


def test_digits_are_real_upsampled_and_split_stratified(default):
    train, test = default.train, default.test
    assert train.images.shape == (1257, 1, 32, 32) and test.images.shape == (540, 1, 32, 32)
    assert train.images.min() >= 0 and train.images.max() <= 1
    # stratified: every class keeps roughly the same share in both parts
    share_train = np.bincount(train.true_labels, minlength=10) / len(train.true_labels)
    share_test = np.bincount(test.true_labels, minlength=10) / len(test.true_labels)
    assert np.abs(share_train - share_test).max() < 0.01


def test_split_and_defects_are_deterministic_in_the_seed(default):
    again = load_digits_dataset(_config())
    np.testing.assert_array_equal(default.train.images, again.train.images)
    np.testing.assert_array_equal(default.train.labels, again.train.labels)
    other = load_digits_dataset(_config(seed=1))
    assert not np.array_equal(default.train.labels, other.train.labels)


def test_tag_is_stamped_on_the_requested_fraction_of_one_class_only(default):
    train = default.train
    members = train.true_labels == 3
    assert train.tagged.sum() == round(0.5 * members.sum())
    assert not train.tagged[~members].any()
    rows, cols = tag_slices("bottom-left", 32, 32)
    for i in np.flatnonzero(train.tagged)[:5]:
        np.testing.assert_array_equal(train.images[i, 0, rows, cols], TAG_PATTERN)


@pytest.mark.parametrize("corner", ["bottom-right", "top-left", "top-right"])
def test_tag_goes_to_the_requested_corner(corner):
    data = load_digits_dataset(_config(artifact={"class": 5, "fraction": 0.3, "corner": corner}))
    rows, cols = tag_slices(corner, 32, 32)
    i = np.flatnonzero(data.train.tagged)[0]
    assert data.train.true_labels[i] == 5
    np.testing.assert_array_equal(data.train.images[i, 0, rows, cols], TAG_PATTERN)


def test_fraction_zero_and_rate_zero_disable_the_defects():
    data = load_digits_dataset(_config(artifact={"fraction": 0.0}, label_noise={"rate": 0.0}))
    assert not data.train.tagged.any() and not data.train.flipped.any()


def test_symmetric_noise_flips_exactly_the_rate_to_other_classes(default):
    train = default.train
    assert train.flipped.sum() == round(0.1 * len(train.labels))
    assert (train.labels[train.flipped] != train.true_labels[train.flipped]).all()


def test_asymmetric_noise_only_flips_pairs():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 100)
    noisy = flip_labels(labels, 0.2, "asymmetric", 10, rng)
    moved = noisy != labels
    assert moved.sum() == 8 * 20  # classes 0 and 2 have no partner
    for src, dst in zip(labels[moved], noisy[moved]):
        assert ASYMMETRIC_PAIRS[int(src)] == dst


def _changed(data, clean):
    """(N, H, W) pixels that differ from the clean images (same split, no artifact)."""
    return np.abs(data.train.images - clean.train.images).sum(1) > 0


@pytest.fixture(scope="module")
def clean():
    return load_digits_dataset(_config(artifact={"fraction": 0.0}))


def test_a_moving_tag_lands_at_many_positions_of_the_one_class(clean):
    data = load_digits_dataset(_config(artifact={"class": 4, "fraction": 0.4, "kind": "moving"}))
    tagged = data.train.tagged
    assert not tagged[data.train.true_labels != 4].any()
    assert tagged.sum() == round(0.4 * (data.train.true_labels == 4).sum())
    changed = _changed(data, clean)
    assert not changed[~tagged].any()
    corners = {tuple(np.argwhere(changed[i]).min(0)) for i in np.flatnonzero(tagged)}
    assert len(corners) > 0.8 * tagged.sum()  # (almost) every image has its own position
    i = np.flatnonzero(tagged)[0]
    top, left = np.argwhere(changed[i]).min(0)
    window = data.train.images[i, 0, top:top + TAG_PATTERN.shape[0], left:left + TAG_PATTERN.shape[1]]
    np.testing.assert_array_equal(window[TAG_PATTERN == 1], 1.0)


def test_a_scaled_tag_sits_in_its_corner_at_sizes_from_0_6_to_1_6(clean):
    data = load_digits_dataset(_config(artifact={"class": 2, "fraction": 0.5, "kind": "scaled", "corner": "top-right"}))
    changed = _changed(data, clean)
    heights = []
    for i in np.flatnonzero(data.train.tagged):
        box = np.argwhere(changed[i])
        assert box[:, 0].min() == 1 and box[:, 1].max() == 30  # in the top-right corner, margin of one pixel
        heights.append(box[:, 0].max())                        # the tag's bottom row
    assert min(heights) <= 3 and max(heights) >= 6  # 4 rows x 0.6 .. 1.6
    assert not changed[~data.train.tagged].any()


@pytest.mark.parametrize("edge", ["top", "bottom", "left", "right"])
def test_a_frame_is_a_bright_line_along_the_requested_edge(clean, edge):
    data = load_digits_dataset(_config(artifact={"class": 7, "fraction": 0.4, "kind": "frame", "edge": edge}))
    i = np.flatnonzero(data.train.tagged)[0]
    line = {"top": data.train.images[i, 0, 0], "bottom": data.train.images[i, 0, -1],
            "left": data.train.images[i, 0, :, 0], "right": data.train.images[i, 0, :, -1]}[edge]
    np.testing.assert_array_equal(line, 1.0)
    assert _changed(data, clean)[i].sum() <= 32


def test_a_texture_brightens_only_the_background_faintly(clean):
    data = load_digits_dataset(_config(artifact={"class": 0, "fraction": 0.4, "kind": "texture"}))
    i = np.flatnonzero(data.train.tagged)[0]
    before, after = clean.train.images[i, 0], data.train.images[i, 0]
    assert (after >= before).all() and after.max() == before.max()
    changed = after > before
    assert changed.mean() > 0.3                          # over the whole background
    assert (after[changed] <= TEXTURE_AMPLITUDE + 1e-6).all() and TEXTURE_AMPLITUDE <= 0.5  # faint
    assert (before[changed] < TEXTURE_AMPLITUDE).all()  # never on the digit's bright strokes


def test_a_list_of_artifacts_poisons_several_classes(clean):
    data = load_digits_dataset(_config(artifact=[{"class": 3, "fraction": 0.4},
                                                 {"class": 8, "fraction": 0.4, "kind": "moving"}]))
    poisoned = np.unique(data.train.true_labels[data.train.tagged])
    assert poisoned.tolist() == [3, 8]
    with pytest.raises(Exception, match="one artifact per class"):
        _config(artifact=[{"class": 3}, {"class": 3, "kind": "frame"}])
    with pytest.raises(Exception, match="kind"):
        _config(artifact={"kind": "sticker"})
