import numpy as np
import pytest

from unhans.pipeline.config import DatasetConfig, from_dict
from unhans.pipeline.defects import ASYMMETRIC_PAIRS, TAG_PATTERN, flip_labels, tag_slices
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
