"""Per-sample statistics equal hand-computed values on crafted trajectories fed through update()."""
from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from unhans.spray.dynamics import DynamicsRecorder, load_trajectory, statistics_from_trajectory

K = 3
NAN = None  # a sample not observed in an epoch


def prob_of(margin):
    """Given-label probability of logits (margin, 0, 0), at the float16 storage precision."""
    return float(np.float16(math.exp(margin) / (math.exp(margin) + K - 1)))


def logits_with(margins, labels):
    """(B, K) logits whose given-label logit is the margin and all others 0."""
    z = torch.zeros(len(margins), K)
    z[torch.arange(len(margins)), torch.as_tensor(labels)] = torch.tensor(margins)
    return z


def record(margins_by_epoch, seed=0):
    """Feed crafted logits: margins_by_epoch[e][i] is sample i's margin in epoch e (None = unseen).

    Each epoch's observed samples arrive shuffled in two batches, with random given labels.
    """
    num_samples = len(margins_by_epoch[0])
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, num_samples)
    rec = DynamicsRecorder(num_samples=num_samples, num_classes=K)
    for row in margins_by_epoch:
        ids = rng.permutation([i for i, m in enumerate(row) if m is not None])
        for part in np.array_split(ids, 2):
            y = torch.as_tensor(labels[part])
            z = torch.zeros(len(part), K)
            z[torch.arange(len(part)), y] = torch.tensor([float(row[i]) for i in part])
            rec.update(torch.as_tensor(part), z, y)
        rec.end_epoch()
    return rec


CRAFTED = [  # epochs x samples
    # learned   flip-flop  never     gaps      unseen  once
    [-1.0,      1.0,       -2.0,     1.0,      NAN,    NAN],
    [1.0,       -1.0,      -1.0,     NAN,      NAN,    NAN],
    [2.0,       1.0,       0.0,      -1.0,     NAN,    NAN],
    [2.0,       -1.0,      -0.5,     NAN,      NAN,    2.0],
    [2.0,       1.0,       -1.0,     0.5,      NAN,    NAN],
]


@pytest.fixture(scope="module")
def crafted_table():
    return record(CRAFTED).statistics()


def column(table, name):
    return table.column(name).to_numpy(zero_copy_only=False)


def expected(sample, reduce):
    values = [row[sample] for row in CRAFTED if row[sample] is not None]
    return reduce(values)


@pytest.mark.parametrize("sample", [0, 1, 2, 3, 5])
def test_aum_confidence_variability_correctness_match_hand_computed(crafted_table, sample):
    assert column(crafted_table, "aum")[sample] == pytest.approx(expected(sample, np.mean), abs=1e-6)
    probs = expected(sample, lambda ms: [prob_of(m) for m in ms])
    assert column(crafted_table, "confidence")[sample] == pytest.approx(np.mean(probs), abs=1e-6)
    assert column(crafted_table, "variability")[sample] == pytest.approx(np.std(probs), abs=1e-6)  # population std
    correct = expected(sample, lambda ms: np.mean([m > 0 for m in ms]))
    assert column(crafted_table, "correctness")[sample] == pytest.approx(correct, abs=1e-6)


def test_forgetting_events_count_correct_to_incorrect_transitions(crafted_table):
    # learned once and kept: 0; flip-flop 1,0,1,0,1: 2; gaps 1,_,0,_,1: the gap is skipped, 1;
    # observed once: 0
    assert column(crafted_table, "forgetting_events")[[0, 1, 3, 5]].tolist() == [0, 2, 1, 0]


def test_never_learned_sample_gets_the_maximal_forgetting_count_equal_to_number_of_epochs(crafted_table):
    assert column(crafted_table, "forgetting_events")[2] == len(CRAFTED)
    assert column(crafted_table, "first_learned_epoch")[2] == -1
    assert column(crafted_table, "correctness")[2] == 0.0  # includes a tie (margin 0), which is not correct


def test_first_learned_epoch_is_the_first_correct_epoch(crafted_table):
    assert column(crafted_table, "first_learned_epoch")[[0, 1, 3, 5]].tolist() == [1, 0, 0, 3]


def test_never_observed_sample_has_nan_statistics_and_sentinel_counts(crafted_table):
    row = {name: column(crafted_table, name)[4] for name in crafted_table.column_names}
    for name in ("aum", "confidence", "variability", "correctness", "mislabel_score"):
        assert np.isnan(row[name]), name
    assert (row["forgetting_events"], row["first_learned_epoch"], row["observed_epochs"]) == (-1, -1, 0)
    assert not row["mislabel_suspect"] and not row["ambiguous"]


def test_observed_epochs_count_only_epochs_with_an_observation(crafted_table):
    assert column(crafted_table, "observed_epochs").tolist() == [5, 5, 5, 3, 0, 1]


def test_table_has_one_row_per_sample_and_the_documented_schema(crafted_table):
    assert crafted_table.schema.names == [
        "sample_id", "aum", "confidence", "variability", "correctness", "forgetting_events",
        "first_learned_epoch", "mislabel_score", "mislabel_suspect", "ambiguous", "observed_epochs"]
    types = {f.name: f.type for f in crafted_table.schema}
    assert types["sample_id"] == pa.int64()
    assert all(types[n] == pa.float32() for n in ("aum", "confidence", "variability", "correctness", "mislabel_score"))
    assert all(types[n] == pa.int32() for n in ("forgetting_events", "first_learned_epoch", "observed_epochs"))
    assert types["mislabel_suspect"] == types["ambiguous"] == pa.bool_()
    assert column(crafted_table, "sample_id").tolist() == list(range(len(CRAFTED[0])))
    metadata = json.loads(crafted_table.schema.metadata[b"unhans.dynamics"])
    assert metadata["num_epochs"] == 5 and metadata["aum_threshold"] == 0.0


def test_mislabel_score_is_negative_aum_and_suspect_means_aum_not_positive(crafted_table):
    aum = column(crafted_table, "aum")
    np.testing.assert_array_equal(column(crafted_table, "mislabel_score"), -aum)
    # AUM: 1.2, 0.2, -0.9, 0.1667, nan, 2.0
    assert column(crafted_table, "mislabel_suspect").tolist() == [False, False, True, False, False, False]


def test_aum_exactly_zero_is_suspect():
    table = record([[1.0], [-1.0]]).statistics()
    assert column(table, "aum")[0] == 0.0 and column(table, "mislabel_suspect")[0]


def test_variability_marks_ambiguous_but_never_changes_the_mislabel_score():
    # 20 stable samples, one oscillating between confident and unconfident with the same AUM as sample 0
    stable = [[1.0] * 20 for _ in range(4)]
    rows = [r + [m] for r, m in zip(stable, [4.0, -2.0, 4.0, -2.0])]
    table = record(rows).statistics()
    assert column(table, "aum")[20] == column(table, "aum")[0] == 1.0
    assert column(table, "mislabel_score")[20] == column(table, "mislabel_score")[0]
    assert column(table, "ambiguous").tolist() == [False] * 20 + [True]
    assert column(table, "variability")[20] > 0.4


def test_ambiguity_needs_a_minimum_variability():
    rows = [[1.0, 1.0, 1.0, 1.1], [1.0, 1.0, 1.0, 0.9]]  # sample 3 varies a little, far below the floor
    assert not column(record(rows).statistics(), "ambiguous").any()


def test_fixed_aum_threshold_can_be_chosen():
    table = record([[1.0, 2.0, 3.0]]).statistics(aum_threshold=2.0)
    assert column(table, "mislabel_suspect").tolist() == [True, True, False]


def test_threshold_samples_set_the_suspect_cutoff_to_their_99th_percentile_aum():
    margins = [-3.0, -2.5, -2.0, -1.0, 0.5, 2.0]
    table = record([margins]).statistics(threshold_sample_ids=np.array([0, 1, 2]))
    cutoff = np.percentile([-3.0, -2.5, -2.0], 99)
    assert column(table, "mislabel_suspect").tolist() == [m <= cutoff for m in margins]
    assert json.loads(table.schema.metadata[b"unhans.dynamics"])["aum_threshold_source"] == "threshold_samples"


def test_window_restricts_statistics_to_epochs_and_keeps_absolute_epoch_numbers():
    rec = record(CRAFTED)
    table = statistics_from_trajectory(rec.trajectory.window(2, 5))
    assert column(table, "aum")[0] == pytest.approx(2.0)
    assert column(table, "first_learned_epoch")[[0, 1, 5]].tolist() == [2, 2, 3]
    assert column(table, "forgetting_events")[1] == 1
    assert column(table, "forgetting_events")[2] == 3  # never learned within a 3-epoch window


def test_statistics_before_any_epoch_are_all_missing():
    table = DynamicsRecorder(num_samples=3, num_classes=2).statistics()
    assert table.num_rows == 3 and np.isnan(column(table, "aum")).all()
    assert column(table, "forgetting_events").tolist() == [-1, -1, -1]


def softmax_given(logits, label):
    """Given-label probability of one row of logits, at the float16 storage precision."""
    e = np.exp(np.asarray(logits, dtype=np.float64))
    return float(np.float16(e[label] / e.sum()))


def test_repeated_and_out_of_order_ids_count_only_the_last_observation_of_each_epoch():
    rec = DynamicsRecorder(num_samples=3, num_classes=K)
    # epoch 0: sample 2 seen three times (last: margin -1), sample 0 twice across batches (last: +2)
    rec.update(torch.tensor([2, 0, 2]), logits_with([3.0, -3.0, 5.0], [0, 0, 0]), torch.tensor([0, 0, 0]))
    rec.update(torch.tensor([1, 2, 0]), logits_with([0.5, -1.0, 2.0], [1, 0, 0]), torch.tensor([1, 0, 0]))
    rec.end_epoch()
    # epoch 1: ids in reverse order, sample 1 twice in one batch (last: margin -2)
    rec.update(torch.tensor([2, 1, 1, 0]), logits_with([1.0, 4.0, -2.0, -1.0], [0, 1, 1, 0]),
               torch.tensor([0, 1, 1, 0]))
    rec.end_epoch()
    table = rec.statistics()
    # kept margins: sample 0: +2, -1; sample 1: +0.5, -2; sample 2: -1, +1
    np.testing.assert_allclose(column(table, "aum"), [0.5, -0.75, 0.0])
    np.testing.assert_allclose(column(table, "correctness"), [0.5, 0.5, 0.5])
    assert column(table, "forgetting_events").tolist() == [1, 1, 0]
    assert column(table, "first_learned_epoch").tolist() == [0, 0, 1]
    np.testing.assert_allclose(column(table, "confidence"), [np.mean([prob_of(2.0), prob_of(-1.0)]),
                                                             np.mean([prob_of(0.5), prob_of(-2.0)]),
                                                             np.mean([prob_of(-1.0), prob_of(1.0)])], atol=1e-6)
    assert column(table, "observed_epochs").tolist() == [2, 2, 2]


def test_ties_are_not_correct_but_a_tie_among_the_other_classes_is():
    rec = DynamicsRecorder(num_samples=3, num_classes=K)
    logits = torch.tensor([[1.0, 1.0, 0.0],    # given 0 ties with class 1: margin 0, not correct
                           [2.0, 1.0, 1.0],    # given 0 beats the tied others: margin 1, correct
                           [0.0, 0.0, 0.0]])   # all equal: margin 0, not correct
    y = torch.tensor([0, 0, 2])
    for _ in range(2):
        rec.update(torch.arange(3), logits, y)
        rec.end_epoch()
    table = rec.statistics()
    assert column(table, "aum").tolist() == [0.0, 1.0, 0.0]
    assert column(table, "correctness").tolist() == [0.0, 1.0, 0.0]
    assert column(table, "forgetting_events").tolist() == [2, 0, 2]  # never learned: E = 2
    assert column(table, "first_learned_epoch").tolist() == [-1, 0, -1]
    expected_conf = [softmax_given([1, 1, 0], 0), softmax_given([2, 1, 1], 0), softmax_given([0, 0, 0], 2)]
    np.testing.assert_allclose(column(table, "confidence"), expected_conf, atol=1e-6)
    np.testing.assert_allclose(column(table, "variability"), 0.0, atol=1e-7)
    assert column(table, "mislabel_suspect").tolist() == [True, False, True]  # AUM <= 0


def test_restart_mid_epoch_forgets_the_unclosed_epoch_and_gives_hand_computed_statistics(tmp_path):
    labels = torch.tensor([0, 1, 2, 0])
    first = DynamicsRecorder(num_samples=4, num_classes=K, store=tmp_path)
    order = torch.tensor([3, 1, 0, 2])
    first.update(order, logits_with([1.0, -1.0, 2.0, -2.0], labels[order]), labels[order])
    first.end_epoch()  # epoch 0, persisted: margins 2, -1, -2, 1
    first.update(torch.tensor([0, 1]), logits_with([-9.0, 9.0], labels[:2]), labels[:2])  # crash before end_epoch
    del first

    resumed = DynamicsRecorder(num_samples=4, num_classes=K, store=tmp_path)
    assert resumed.num_epochs == 1
    order = torch.tensor([2, 0])
    resumed.update(order, logits_with([3.0, 1.0], labels[order]), labels[order])
    resumed.update(torch.tensor([1]), logits_with([1.0], labels[1:2]), labels[1:2])
    resumed.end_epoch()  # epoch 1 redone: margins 1, 1, 3, unseen
    table = statistics_from_trajectory(load_trajectory(tmp_path))
    np.testing.assert_allclose(column(table, "aum"), [1.5, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(column(table, "correctness"), [1.0, 0.5, 0.5, 1.0])
    assert column(table, "first_learned_epoch").tolist() == [0, 1, 1, 0]
    assert column(table, "forgetting_events").tolist() == [0, 0, 0, 0]
    assert column(table, "observed_epochs").tolist() == [2, 2, 2, 1]
    np.testing.assert_allclose(column(table, "variability"),
                               [np.std([prob_of(2.0), prob_of(1.0)]), np.std([prob_of(-1.0), prob_of(1.0)]),
                                np.std([prob_of(-2.0), prob_of(3.0)]), 0.0], atol=1e-6)
