"""Per-sample statistics of a training trajectory, as one Arrow table.

For sample ``i`` let ``O_i`` be the epochs in which it was observed and ``T_i = |O_i|``
(``observed_epochs``). Missing epochs are skipped by every statistic:

- ``aum`` = mean of the margin over ``O_i`` (Pleiss et al., 2020; seed 002 Eq. 14);
- ``confidence`` = mean of the given-label probability over ``O_i`` (Swayamdipta et al., 2020;
  Eq. 12);
- ``variability`` = population standard deviation (divide by ``T_i``) of that probability (Eq. 13);
- ``correctness`` = fraction of ``O_i`` in which the sample was correct (strictly winning logit);
- ``forgetting_events`` = number of correct -> incorrect transitions between consecutive
  *observed* epochs (Toneva et al., 2019, counted per epoch rather than per presentation).
  A sample never correct in any observed epoch gets the maximal value ``E``, the number of epochs
  in the trajectory, which exceeds the ``floor(E / 2)`` events any learned sample can have, so
  "never learned" ranks as most forgettable, as in Toneva et al.; a sample never observed gets -1;
- ``first_learned_epoch`` = the first (absolute) epoch in which the sample was correct, -1 if none;
- ``mislabel_score``, ``mislabel_suspect``: see :mod:`spray.dynamics.mislabel` (``-aum``,
  ``aum <= threshold``);
- ``ambiguous``: see :mod:`spray.dynamics.ambiguity` (variability above a robust cutoff);
- ``observed_epochs`` = ``T_i``.

Float statistics are NaN for never-observed samples. The table's schema metadata key
``unhans.dynamics`` holds the parameters and the thresholds actually used (JSON).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .ambiguity import ambiguity_threshold, ambiguous_samples
from .mislabel import mislabel_score, mislabel_suspects, threshold_from_threshold_samples
from .trajectory import MISSING, Trajectory

STATISTICS_VERSION = 1


@dataclass(frozen=True)
class SampleStatistics:
    """Per-sample statistics (each (N,)): float64 means, int64 counts and epochs. See module docstring."""

    aum: np.ndarray
    confidence: np.ndarray
    variability: np.ndarray
    correctness: np.ndarray
    forgetting_events: np.ndarray
    first_learned_epoch: np.ndarray
    observed_epochs: np.ndarray


def sample_statistics(trajectory: Trajectory) -> SampleStatistics:
    """Fold the trajectory epoch by epoch (O(N) memory besides the trajectory) into statistics."""
    n, num_epochs = trajectory.num_samples, trajectory.num_epochs
    count = np.zeros(n, np.int64)
    margin_sum = np.zeros(n, np.float64)
    prob_sum = np.zeros(n, np.float64)
    correct_count = np.zeros(n, np.int64)
    forgetting = np.zeros(n, np.int64)
    first_learned = np.full(n, -1, np.int64)
    previous = np.full(n, MISSING, np.uint8)  # correctness at the latest observed epoch so far
    for e in range(num_epochs):
        correct = trajectory.correct[e]
        observed = correct != MISSING
        is_correct = correct == 1
        count += observed
        margin_sum += np.where(observed, trajectory.margin[e].astype(np.float64), 0.0)
        prob_sum += np.where(observed, trajectory.prob[e].astype(np.float64), 0.0)
        correct_count += is_correct
        forgetting += (previous == 1) & (correct == 0)
        previous = np.where(observed, correct, previous)
        first_learned = np.where((first_learned < 0) & is_correct, trajectory.first_epoch + e, first_learned)
    with np.errstate(invalid="ignore", divide="ignore"):
        seen = count > 0
        aum = np.where(seen, margin_sum / count, np.nan)
        confidence = np.where(seen, prob_sum / count, np.nan)
        correctness = np.where(seen, correct_count / count, np.nan)
        squared = np.zeros(n, np.float64)
        for e in range(num_epochs):  # second pass: exact population variance
            observed = trajectory.correct[e] != MISSING
            squared += np.where(observed, (trajectory.prob[e].astype(np.float64) - confidence) ** 2, 0.0)
        variability = np.where(seen, np.sqrt(squared / count), np.nan)
    forgetting = np.where(seen & (first_learned < 0), num_epochs, forgetting)
    forgetting = np.where(seen, forgetting, -1)
    return SampleStatistics(aum=aum, confidence=confidence, variability=variability, correctness=correctness,
                            forgetting_events=forgetting, first_learned_epoch=first_learned, observed_epochs=count)


def statistics_from_trajectory(
    trajectory: Trajectory,
    *,
    aum_threshold: float = 0.0,
    threshold_sample_ids: np.ndarray | None = None,
    threshold_percentile: float = 99.0,
    ambiguous_z: float = 2.0,
    ambiguous_min_variability: float = 0.1,
) -> pa.Table:
    """One row per sample id ``0..N-1`` with the statistics defined in the module docstring.

    ``aum_threshold`` is the suspect cutoff (``aum <= aum_threshold``); if
    ``threshold_sample_ids`` is given it is replaced by the ``threshold_percentile`` of those
    samples' AUM (Pleiss et al.'s threshold samples). ``ambiguous_z`` and
    ``ambiguous_min_variability`` set the ambiguity cutoff. Columns: sample_id int64; aum,
    confidence, variability, correctness float32; forgetting_events, first_learned_epoch int32;
    mislabel_score float32; mislabel_suspect, ambiguous bool; observed_epochs int32.
    """
    stats = sample_statistics(trajectory)
    if threshold_sample_ids is not None:
        threshold = threshold_from_threshold_samples(stats.aum, threshold_sample_ids, threshold_percentile)
        threshold_source = "threshold_samples"
    else:
        threshold = float(aum_threshold)
        threshold_source = "fixed"
    ambiguity_cutoff = ambiguity_threshold(stats.variability, stats.observed_epochs, z=ambiguous_z,
                                           min_variability=ambiguous_min_variability)
    metadata = {
        "statistics_version": STATISTICS_VERSION,
        "num_epochs": trajectory.num_epochs,
        "first_epoch": trajectory.first_epoch,
        "num_samples": trajectory.num_samples,
        "num_classes": trajectory.num_classes,
        "mislabel_score": "-aum",
        "aum_threshold": threshold,
        "aum_threshold_source": threshold_source,
        "threshold_percentile": threshold_percentile if threshold_sample_ids is not None else None,
        "ambiguous_z": ambiguous_z,
        "ambiguous_min_variability": ambiguous_min_variability,
        "ambiguous_variability_threshold": None if np.isnan(ambiguity_cutoff) else ambiguity_cutoff,
        "never_learned_forgetting_events": trajectory.num_epochs,
    }
    columns = {
        "sample_id": pa.array(np.arange(trajectory.num_samples, dtype=np.int64)),
        "aum": pa.array(stats.aum.astype(np.float32)),
        "confidence": pa.array(stats.confidence.astype(np.float32)),
        "variability": pa.array(stats.variability.astype(np.float32)),
        "correctness": pa.array(stats.correctness.astype(np.float32)),
        "forgetting_events": pa.array(stats.forgetting_events.astype(np.int32)),
        "first_learned_epoch": pa.array(stats.first_learned_epoch.astype(np.int32)),
        "mislabel_score": pa.array(mislabel_score(stats.aum).astype(np.float32)),
        "mislabel_suspect": pa.array(mislabel_suspects(stats.aum, threshold)),
        "ambiguous": pa.array(ambiguous_samples(stats.variability, stats.observed_epochs, ambiguity_cutoff)),
        "observed_epochs": pa.array(stats.observed_epochs.astype(np.int32)),
    }
    return pa.table(columns, metadata={"unhans.dynamics": json.dumps(metadata, sort_keys=True)})
