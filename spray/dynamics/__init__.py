"""Training dynamics: per-sample margins, confidences and forgetting, recorded during training.

``DynamicsRecorder`` records, per epoch, each sample's margin, given-label probability and
correctness from the training batches' logits and can persist them under a run directory;
``load_trajectory`` reads a persisted run back and ``statistics_from_trajectory`` turns a
trajectory into the per-sample table (AUM, cartography, forgetting, mislabel and ambiguity flags).
References: Pleiss et al. 2020 (AUM), Swayamdipta et al. 2020 (dataset cartography),
Toneva et al. 2019 (forgetting events); seed 002, Eq. 12-14.
"""
from .recorder import DynamicsRecorder
from .statistics import statistics_from_trajectory
from .trajectory import Trajectory
from .trajectory_store import load_trajectory

__all__ = ["DynamicsRecorder", "Trajectory", "load_trajectory", "statistics_from_trajectory"]
