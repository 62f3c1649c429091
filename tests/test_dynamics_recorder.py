"""DynamicsRecorder.update / end_epoch: what one epoch records, per sample."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unhans.spray.dynamics import DynamicsRecorder
from unhans.spray.dynamics import recorder as recorder_module
from unhans.spray.dynamics.trajectory import MISSING


def logits_with_margin(margins, labels, num_classes=3):
    """Logits whose given-label logit is ``margin`` and all others 0: margin ``m``, prob ``e^m / (e^m + K - 1)``."""
    margins = torch.as_tensor(margins, dtype=torch.float32)
    labels = torch.as_tensor(labels)
    z = torch.zeros(len(margins), num_classes)
    z[torch.arange(len(margins)), labels] = margins
    return z


def prob_of(margin, num_classes=3):
    return math.exp(margin) / (math.exp(margin) + num_classes - 1)


def one_epoch(rec, batches):
    for idx, logits, y in batches:
        rec.update(torch.as_tensor(idx), logits, torch.as_tensor(y))
    rec.end_epoch()
    return rec.trajectory


def test_update_records_margin_probability_and_correctness():
    rec = DynamicsRecorder(num_samples=3, num_classes=3)
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0], [0.0, 0.0, 0.0]])
    traj = one_epoch(rec, [([0, 1, 2], logits, [0, 1, 2])])
    np.testing.assert_array_equal(traj.margin[0].astype(np.float32), [1.5, -2.0, 0.0])
    expected_prob = torch.softmax(logits, 1)[torch.arange(3), torch.tensor([0, 1, 2])].numpy()
    np.testing.assert_allclose(traj.prob[0].astype(np.float32), expected_prob, rtol=1e-3)
    np.testing.assert_array_equal(traj.correct[0], [1, 0, 0])


def test_tie_with_the_given_label_is_not_correct_and_has_margin_zero():
    rec = DynamicsRecorder(num_samples=2, num_classes=3)
    logits = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    traj = one_epoch(rec, [([0, 1], logits, [0, 2])])
    np.testing.assert_array_equal(traj.margin[0].astype(np.float32), [0.0, 0.0])
    np.testing.assert_array_equal(traj.correct[0], [0, 0])


def test_repeated_ids_in_one_batch_keep_the_last_observation():
    rec = DynamicsRecorder(num_samples=4, num_classes=3)
    idx = [3, 1, 3, 0, 3, 1]
    margins = [1.0, 2.0, -1.0, 0.5, 0.25, -2.0]
    labels = [0, 1, 2, 0, 1, 2]
    traj = one_epoch(rec, [(idx, logits_with_margin(margins, labels), labels)])
    np.testing.assert_array_equal(traj.margin[0][[0, 1, 3]].astype(np.float32), [0.5, -2.0, 0.25])
    np.testing.assert_array_equal(traj.correct[0], [1, 0, MISSING, 1])


def test_later_batches_override_earlier_ones_and_order_of_ids_does_not_matter():
    rec = DynamicsRecorder(num_samples=5, num_classes=3)
    batches = [([4, 2, 0], logits_with_margin([1.0, 1.0, 1.0], [0, 0, 0]), [0, 0, 0]),
               ([2, 1], logits_with_margin([-0.5, 3.0], [1, 1]), [1, 1]),
               ([3, 2], logits_with_margin([2.0, 4.0], [2, 2]), [2, 2])]
    traj = one_epoch(rec, batches)
    np.testing.assert_array_equal(traj.margin[0][:5].astype(np.float32), [1.0, 3.0, 4.0, 2.0, 1.0])


def test_samples_not_seen_in_an_epoch_are_missing():
    rec = DynamicsRecorder(num_samples=4, num_classes=3)
    traj = one_epoch(rec, [([1, 3], logits_with_margin([1.0, -1.0], [0, 0]), [0, 0])])
    assert np.isnan(traj.margin[0][[0, 2]]).all() and np.isnan(traj.prob[0][[0, 2]]).all()
    np.testing.assert_array_equal(traj.correct[0], [MISSING, 1, MISSING, 0])


def test_each_epoch_starts_empty():
    rec = DynamicsRecorder(num_samples=2, num_classes=3)
    one_epoch(rec, [([0, 1], logits_with_margin([1.0, 1.0], [0, 0]), [0, 0])])
    traj = one_epoch(rec, [([1], logits_with_margin([-1.0], [0]), [0])])
    np.testing.assert_array_equal(traj.correct, [[1, 1], [MISSING, 0]])


def test_end_epoch_without_updates_records_an_all_missing_epoch():
    rec = DynamicsRecorder(num_samples=3, num_classes=2)
    assert rec.end_epoch() == 0
    assert rec.num_epochs == 1 and (rec.trajectory.correct == MISSING).all()


def test_logits_that_require_grad_are_detached():
    model = torch.nn.Linear(4, 3)
    logits = model(torch.randn(5, 4))
    rec = DynamicsRecorder(num_samples=5, num_classes=3)
    rec.update(torch.arange(5), logits, torch.zeros(5, dtype=torch.long))
    logits.sum().backward()  # the recorder kept no part of the graph alive or modified
    rec.end_epoch()
    assert rec.trajectory.observed.all()


def test_inputs_modified_in_place_after_update_do_not_change_the_record():
    rec = DynamicsRecorder(num_samples=3, num_classes=3)
    idx, labels = torch.tensor([0, 1]), torch.tensor([0, 0])
    logits = logits_with_margin([1.0, 2.0], labels)
    rec.update(idx, logits, labels)
    idx.fill_(2), labels.fill_(1), logits.fill_(-5.0)  # a loop reusing its buffers for the next batch
    traj = one_epoch(rec, [])
    np.testing.assert_array_equal(traj.margin[0][:2].astype(np.float32), [1.0, 2.0])
    np.testing.assert_array_equal(traj.correct[0], [1, 1, MISSING])


def test_batches_beyond_the_pending_chunk_are_folded_in_update_order(monkeypatch):
    monkeypatch.setattr(recorder_module, "CHUNK_ELEMENTS", 6)  # fold after every second 1-row batch of K=3
    rec = DynamicsRecorder(num_samples=2, num_classes=3)
    for margin in (1.0, -1.0, 2.0, -3.0, 0.5):  # sample 0 observed five times; the last one wins
        rec.update(torch.tensor([0]), logits_with_margin([margin], [0]), torch.tensor([0]))
    traj = one_epoch(rec, [([1], logits_with_margin([-2.0], [2]), [2])])
    np.testing.assert_array_equal(traj.margin[0].astype(np.float32), [0.5, -2.0])


def test_half_precision_logits_are_computed_in_float32():
    rec = DynamicsRecorder(num_samples=1, num_classes=3)
    traj = one_epoch(rec, [([0], logits_with_margin([2.0], [1]).half(), [1])])
    assert float(traj.margin[0, 0]) == 2.0
    assert float(traj.prob[0, 0]) == pytest.approx(prob_of(2.0), rel=1e-3)


def test_non_finite_logits_are_recorded_as_missing():
    rec = DynamicsRecorder(num_samples=2, num_classes=2)
    traj = one_epoch(rec, [([0, 1], torch.tensor([[float("nan"), 0.0], [1.0, 0.0]]), [0, 0])])
    np.testing.assert_array_equal(traj.correct[0], [MISSING, 1])


def test_huge_margins_are_clipped_to_the_float16_range():
    rec = DynamicsRecorder(num_samples=1, num_classes=2)
    traj = one_epoch(rec, [([0], torch.tensor([[1e6, 0.0]]), [0])])
    assert float(traj.margin[0, 0]) == float(np.finfo(np.float16).max)


@pytest.mark.parametrize(
    ("idx", "logits", "y", "message"),
    [
        ([0, 5], torch.zeros(2, 3), [0, 0], "idx must lie"),
        ([0, -1], torch.zeros(2, 3), [0, 0], "idx must lie"),
        ([0, 1], torch.zeros(2, 3), [0, 3], "y must lie"),
        ([0, 1], torch.zeros(2, 4), [0, 0], "logits must be"),
        ([0, 1, 2], torch.zeros(2, 3), [0, 0], "idx must have shape"),
        (torch.tensor([0.0, 1.0]), torch.zeros(2, 3), [0, 0], "idx must be an integer"),
    ],
)
def test_invalid_batches_are_rejected_naming_the_argument(idx, logits, y, message):
    rec = DynamicsRecorder(num_samples=5, num_classes=3)
    with pytest.raises(ValueError, match=message):
        rec.update(torch.as_tensor(idx), logits, torch.as_tensor(y))


@pytest.mark.parametrize(("num_samples", "num_classes"), [(0, 3), (5, 1), (2.5, 3), (True, 3)])
def test_invalid_sizes_are_rejected(num_samples, num_classes):
    with pytest.raises(ValueError):
        DynamicsRecorder(num_samples=num_samples, num_classes=num_classes)


def test_empty_batch_is_a_no_op():
    rec = DynamicsRecorder(num_samples=2, num_classes=3)
    rec.update(torch.empty(0, dtype=torch.long), torch.empty(0, 3), torch.empty(0, dtype=torch.long))
    rec.end_epoch()
    assert not rec.trajectory.observed.any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_recording_on_cuda_matches_cpu():
    idx, labels = [2, 0, 2, 1], [0, 1, 2, 0]
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    cpu, gpu = DynamicsRecorder(3, 3), DynamicsRecorder(3, 3)
    cpu.update(torch.tensor(idx), logits, torch.tensor(labels))
    gpu.update(torch.tensor(idx), logits.cuda(), torch.tensor(labels))  # ids on the host, logits on the device
    cpu.end_epoch(), gpu.end_epoch()
    np.testing.assert_array_equal(cpu.trajectory.margin, gpu.trajectory.margin)
    np.testing.assert_array_equal(cpu.trajectory.correct, gpu.trajectory.correct)


def test_probability_is_stable_for_extreme_logits():
    rec = DynamicsRecorder(num_samples=3, num_classes=3)
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [0.0, float("-inf"), 0.0]])
    traj = one_epoch(rec, [([0, 1, 2], logits, [0, 0, 0])])
    np.testing.assert_allclose(traj.prob[0].astype(np.float32), [1.0, 0.0, 0.5])
