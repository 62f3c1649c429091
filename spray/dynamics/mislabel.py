"""Mislabel evidence from training dynamics: a score and a suspect flag, both from AUM alone.

**Score.** ``mislabel_score = -AUM``, where ``AUM_i = mean_e (z_y - max_{k != y} z_k)`` over the
epochs in which sample ``i`` was observed (Pleiss et al., 2020, "Identifying mislabeled data using
the area under the margin ranking", NeurIPS; seed 002 Eq. 14). Higher means more likely
mislabeled: a mislabeled sample's given label keeps losing to the (true) class the network
generalizes to, so its margin stays negative until it is memorized. The unit is that of the
logits. It needs one training run (the one being monitored) and no held-out data.

Evidence (``benchmarks/mislabel.py``: digits 32x32, small CNN, the audit's untuned recipe, 3 seeds,
mean AUROC of this score vs cleanlab's ``get_label_quality_scores`` on 5-fold out-of-fold
probabilities, i.e. five more fits): symmetric noise 20% 0.999 vs 0.993, 40% 0.998 vs 0.973;
pair flips 20% 0.996 vs 0.949, 40% 0.886 vs 0.775; each flipped label moved to its most
confusable class 20% 0.992 vs 0.966, 40% 0.970 vs 0.874. Precision@n (n = flipped) at 40% pair
flips: 0.713 vs 0.557.

Variability of the given-label probability is deliberately *not* used: it marks ambiguous
samples (Swayamdipta et al., 2020), and in the runs above it ranked flipped labels the wrong
way (AUROC 0.04-0.06 under symmetric, 0.20-0.39 under the other noise). Considered and not
adopted, since plain AUM already wins every setting above: mean confidence (AUROC 0.000-0.005
below AUM in the seed means); a rank combination with ``1 - confidence``
(it would break the one-to-one relation between score and the suspect threshold below); margins
divided by each epoch's mean absolute margin before averaging (+0.02 AUROC at 40% pair flips,
neutral elsewhere, same drawback); AUM centered per given class (worse under pair flips, since
the classes carry different noise).

**Suspect.** ``mislabel_suspect = AUM <= threshold``, so ``suspect == (score >= -threshold)``.
The default threshold 0 needs no ground truth: the given label did not, on average, win
(consistent with "a tie is not correct"). Pleiss et al. calibrate the threshold with *threshold
samples* instead: before training, move a random ~N/(K+1) samples to an extra, fake class K;
their AUM is what a surely-mislabeled sample looks like, and the threshold is its 99th
percentile. The training side of that (relabelling, one extra logit) belongs to the caller;
:func:`threshold_from_threshold_samples` does the statistics side. The default threshold is
conservative for long training (memorized noisy labels gain positive margins late; restrict the
epochs with :meth:`Trajectory.window`) and liberal for very short runs (every sample starts with a
negative margin).
"""
from __future__ import annotations

import numpy as np


def mislabel_score(aum: np.ndarray) -> np.ndarray:
    """``-aum``: (N,) float, higher = more likely mislabeled; NaN where the sample was never observed."""
    return -np.asarray(aum, dtype=np.float64)


def threshold_from_threshold_samples(aum: np.ndarray, threshold_sample_ids: np.ndarray,
                                     percentile: float = 99.0) -> float:
    """AUM threshold of Pleiss et al. (2020): the ``percentile`` of the threshold samples' AUM.

    ``threshold_sample_ids`` are the ids of the samples assigned to the extra fake class during
    training. Unobserved threshold samples are ignored; raises ``ValueError`` if none is observed.
    """
    ids = np.asarray(threshold_sample_ids, dtype=np.int64).ravel()
    aum = np.asarray(aum, dtype=np.float64)
    if ids.size and (ids.min() < 0 or ids.max() >= aum.shape[0]):
        raise ValueError(f"threshold_sample_ids must lie in [0, {aum.shape[0]})")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"threshold_percentile must lie in [0, 100], got {percentile}")
    values = aum[ids]
    values = values[~np.isnan(values)]
    if values.size == 0:
        raise ValueError("no threshold sample was observed; cannot calibrate the AUM threshold")
    return float(np.percentile(values, percentile))


def mislabel_suspects(aum: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """(N,) bool: ``aum <= threshold``; never-observed samples (NaN) are not suspects."""
    aum = np.asarray(aum, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return ~np.isnan(aum) & (aum <= threshold)
