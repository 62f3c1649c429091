"""Mislabel evidence from the audited model alone: its probabilities and its feature-space neighbours."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from unhans.spray import label_quality as lq
from unhans.spray.label_quality import label_quality_from_model

K = 4


def blobs(per_class=60, dims=8, flip_rate=0.1, seed=0):
    """Well-separated Gaussian blobs (one per class) and labels with a fraction flipped to another class."""
    rng = np.random.default_rng(seed)
    true = np.repeat(np.arange(K), per_class)
    centers = 10.0 * rng.standard_normal((K, dims))
    features = centers[true] + rng.standard_normal((len(true), dims))
    flipped = rng.random(len(true)) < flip_rate
    labels = np.where(flipped, (true + rng.integers(1, K, len(true))) % K, true)
    return features, labels, true, flipped


def confident_logits(towards, seed=0, scale=6.0):
    """A model that is sure of ``towards`` for every sample, with a little jitter."""
    rng = np.random.default_rng(seed)
    return scale * np.eye(K)[towards] + 0.3 * rng.standard_normal((len(towards), K))


def test_neighbours_expose_flips_a_memorizing_model_hides():
    features, labels, _true, flipped = blobs()
    logits = confident_logits(labels)  # fit to the noisy labels: probabilities alone are blind
    with_features = label_quality_from_model(logits, labels, features)
    probabilities_only = label_quality_from_model(logits, labels)
    assert roc_auc_score(flipped, with_features.score) > 0.97
    assert roc_auc_score(flipped, probabilities_only.score) < 0.75
    assert (with_features.suspect == flipped).mean() > 0.95


def test_without_features_the_probabilities_decide():
    _features, labels, true, flipped = blobs()
    result = label_quality_from_model(confident_logits(true), labels)  # a model that did not memorize
    assert roc_auc_score(flipped, result.score) > 0.97
    np.testing.assert_array_equal(result.suspect, flipped)
    assert result.evidence["features"] is False and result.evidence["probabilities"] is True
    assert result.evidence["n_neighbors"] == 0


def test_clean_labels_give_no_suspects_and_one_flip_gives_exactly_that_suspect():
    features, _labels, true, _flipped = blobs(flip_rate=0.0)
    clean = label_quality_from_model(confident_logits(true), true, features)
    assert not clean.suspect.any()
    labels = true.copy()
    labels[7] = (true[7] + 1) % K
    one = label_quality_from_model(confident_logits(labels), labels, features)
    np.testing.assert_array_equal(np.flatnonzero(one.suspect), [7])
    assert np.argmax(one.score) == 7


def test_unlabelled_samples_are_ignored_everywhere():
    features, labels, true, _flipped = blobs()
    logits = confident_logits(labels)
    labels = labels.copy()
    unusable = np.arange(0, len(labels), 9)
    labels[unusable] = -1
    logits[unusable] = np.nan      # never read
    features[unusable] = np.inf    # never a neighbour
    result = label_quality_from_model(logits, labels, features)
    assert np.isnan(result.score[unusable]).all() and not result.suspect[unusable].any()
    keep = labels >= 0
    subset = label_quality_from_model(logits[keep], labels[keep], features[keep])
    np.testing.assert_allclose(result.score[keep], subset.score)
    np.testing.assert_array_equal(result.suspect[keep], subset.suspect)
    assert result.evidence["n_ignored"] == len(unusable)
    assert result.evidence["n_labelled"] == keep.sum()


def test_evidence_is_json_and_records_the_neighbours_actually_used():
    features, labels, _true, _flipped = blobs(per_class=2)  # 8 samples: at most 7 others can vote
    result = label_quality_from_model(confident_logits(labels), labels, features, n_neighbors=10)
    evidence = json.loads(json.dumps(result.evidence))
    assert evidence["features"] is True
    assert evidence["n_neighbors"] == 7 and evidence["n_neighbors_requested"] == 10
    assert evidence["n_suspects"] == int(result.suspect.sum())
    assert evidence["n_samples"] == 8


def test_scores_are_float64_deterministic_and_any_feature_width_works():
    features, labels, _true, flipped = blobs()
    logits = confident_logits(labels)
    first = label_quality_from_model(logits, labels, features, seed=3)
    again = label_quality_from_model(logits, labels, features, seed=3)
    assert first.score.dtype == np.float64 and first.suspect.dtype == bool
    np.testing.assert_array_equal(first.score, again.score)
    wide = features @ np.random.default_rng(1).standard_normal((features.shape[1], 300))
    assert roc_auc_score(flipped, label_quality_from_model(logits, labels, wide).score) > 0.97
    assert np.isfinite(label_quality_from_model(logits, labels, features[:, :1]).score).all()


def test_row_chunking_does_not_change_the_result(monkeypatch):
    features, labels, _true, _flipped = blobs()
    logits = confident_logits(labels)
    whole = label_quality_from_model(logits, labels, features)
    monkeypatch.setattr(lq, "CHUNK_ENTRIES", 3 * K)  # three rows at a time
    chunked = label_quality_from_model(logits, labels, features)
    np.testing.assert_allclose(chunked.score, whole.score)


def test_a_class_nobody_is_labelled_with_does_not_break_the_thresholds():
    features, labels, _true, _flipped = blobs()
    logits = np.concatenate([confident_logits(labels), np.zeros((len(labels), 1))], axis=1)  # K + 1 outputs
    result = label_quality_from_model(logits, labels, features)
    assert np.isfinite(result.score).all()


BAD_INPUTS = [
    ({"logits": np.zeros(5)}, "logits"),
    ({"logits": np.zeros((5, 1))}, "logits"),
    ({"labels": np.zeros(4, int)}, "labels"),
    ({"labels": np.array([0, 1, 2, 3, 3])}, "labels"),      # K = 3
    ({"labels": np.array([0, 1, -2, 1, 0])}, "labels"),
    ({"labels": np.array([0, 1, 0.5, 1, 0])}, "labels"),
    ({"logits": np.where(np.eye(5, 3) > 0, np.nan, 0.0)}, "logits"),
    ({"features": np.zeros((4, 2))}, "features"),
    ({"features": np.full((5, 2), np.nan)}, "features"),
    ({"n_neighbors": 0}, "n_neighbors"),
    ({"n_neighbors": 2.5}, "n_neighbors"),
    ({"seed": None}, "seed"),
]


@pytest.mark.parametrize(("override", "name"), BAD_INPUTS)
def test_bad_inputs_are_rejected_naming_the_parameter(override, name):
    arguments = {"logits": np.zeros((5, 3)), "labels": np.array([0, 1, 2, 1, 0]), "features": np.zeros((5, 2)),
                 "n_neighbors": 2, "seed": 0, **override}
    logits, labels, features = arguments.pop("logits"), arguments.pop("labels"), arguments.pop("features")
    with pytest.raises(ValueError, match=name):
        label_quality_from_model(logits, labels, features, **arguments)


def test_logits_read_block_by_block_in_any_order_give_the_same_result():
    from unhans.spray.label_quality import label_quality_from_blocks

    features, labels, _true, _flipped = blobs()
    labels[5] = -1
    logits = confident_logits(labels)
    order = np.random.default_rng(1).permutation(len(labels))
    passes = []

    def blocks():
        passes.append(1)
        for part in np.array_split(order, 7):
            yield part, logits[part]

    streamed = label_quality_from_blocks(blocks, labels, K, features)
    whole = label_quality_from_model(logits, labels, features)
    assert len(passes) == 2
    np.testing.assert_array_equal(streamed.suspect, whole.suspect)
    np.testing.assert_allclose(streamed.score, whole.score, rtol=1e-12, equal_nan=True)


def test_logit_blocks_that_miss_or_repeat_a_sample_are_rejected():
    from unhans.spray.label_quality import label_quality_from_blocks

    _features, labels, _true, _flipped = blobs()
    logits = confident_logits(labels)
    with pytest.raises(ValueError, match="sample 7 is missing"):
        label_quality_from_blocks(lambda: [(np.delete(np.arange(len(labels)), 7), np.delete(logits, 7, 0))], labels, K)
    with pytest.raises(ValueError, match="once each"):
        label_quality_from_blocks(lambda: [(np.arange(10), logits[:10]), (np.arange(10), logits[:10])], labels, K)
