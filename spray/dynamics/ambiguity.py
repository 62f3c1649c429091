"""Ambiguous samples: high variability of the given-label probability across epochs.

Dataset cartography (Swayamdipta et al., 2020; seed 002 Eq. 13) calls samples whose
given-label probability swings across epochs *ambiguous*. This is not mislabel evidence (noisy
labels have low, stable confidence, i.e. low variability).

A sample is flagged when its variability exceeds a robust, data-driven cutoff

    threshold = max(median(v) + z * 1.4826 * MAD(v), min_variability)

over the samples observed in at least two epochs (``1.4826 * MAD`` estimates a standard
deviation robustly; ``z`` defaults to 2). The cutoff adapts to the run, since the early rise of
the probability alone lends every sample some variability in short runs; the floor keeps
near-constant trajectories (all variabilities tiny) from being flagged. Samples observed in
fewer than two epochs are never flagged.
"""
from __future__ import annotations

import numpy as np


def ambiguity_threshold(variability: np.ndarray, observed_epochs: np.ndarray, *, z: float = 2.0,
                        min_variability: float = 0.1) -> float:
    """The variability cutoff described in the module docstring; NaN if no sample qualifies."""
    v = np.asarray(variability, dtype=np.float64)[np.asarray(observed_epochs) >= 2]
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan")
    median = float(np.median(v))
    mad = float(np.median(np.abs(v - median)))
    return max(median + z * 1.4826 * mad, min_variability)


def ambiguous_samples(variability: np.ndarray, observed_epochs: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) bool: observed in at least two epochs and ``variability > threshold``."""
    v = np.asarray(variability, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (np.asarray(observed_epochs) >= 2) & (v > threshold)
