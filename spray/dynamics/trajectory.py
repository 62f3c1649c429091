"""Training trajectory: per epoch and per sample, the margin, the given-label probability and correctness.

One epoch of the trajectory is an :class:`EpochRecord`, three dense arrays indexed by sample id:

- ``margin`` (float16): ``z_y - max_{k != y} z_k``, the given-label logit minus the largest other
  logit (Pleiss et al., 2020, Eq. 14 of seed 002 before averaging over epochs);
- ``prob`` (float16): ``softmax(z)_y``, the probability of the given label (Swayamdipta et al., 2020,
  the summand of seed 002 Eq. 12);
- ``correct`` (uint8): 1 iff ``z_y`` is *strictly* greater than every other logit (a tie is not
  correct, and then the margin is 0), 0 otherwise, and :data:`MISSING` (255) if the sample was not
  observed in that epoch. Unobserved samples also have NaN margin and probability.

Float16 is the storage precision (about 3 significant digits; margins are clipped to
``±65504``). The recorder quantizes every closed epoch to it, whether or not it persists the
epoch, so a statistic does not depend on whether its trajectory came from memory or from disk.
A :class:`Trajectory` stacks epoch records into ``(E, N)`` arrays.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

MISSING: Final[int] = 255
"""Value of ``correct`` for a sample not observed in an epoch."""

FLOAT16_MAX: Final[float] = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class EpochRecord:
    """One closed epoch: ``margin`` and ``prob`` (N,) float16, ``correct`` (N,) uint8 (0, 1 or MISSING)."""

    margin: np.ndarray
    prob: np.ndarray
    correct: np.ndarray

    def __post_init__(self) -> None:
        n = self.correct.shape
        for name, array, dtype in (("margin", self.margin, np.float16), ("prob", self.prob, np.float16),
                                   ("correct", self.correct, np.uint8)):
            if array.ndim != 1 or array.shape != n or array.dtype != dtype:
                raise ValueError(f"EpochRecord.{name} must be a 1-d {np.dtype(dtype).name} array of shape {n}, "
                                 f"got {array.dtype.name} {array.shape}")

    @property
    def num_samples(self) -> int:
        return int(self.correct.shape[0])

    @classmethod
    def missing(cls, num_samples: int) -> EpochRecord:
        """An epoch in which no sample was observed."""
        return cls(margin=np.full(num_samples, np.nan, np.float16), prob=np.full(num_samples, np.nan, np.float16),
                   correct=np.full(num_samples, MISSING, np.uint8))

    @classmethod
    def quantize(cls, margin: np.ndarray, prob: np.ndarray, correct: np.ndarray) -> EpochRecord:
        """Quantize full-precision observations to the storage precision.

        ``margin`` and ``prob`` are (N,) floats, ``correct`` (N,) uint8 with :data:`MISSING` for
        unobserved samples. An observation whose margin or probability is not a number (NaN
        logits) is recorded as missing, so that "observed" means the same in all three arrays.
        """
        margin = np.asarray(margin, dtype=np.float32)
        prob = np.asarray(prob, dtype=np.float32)
        correct = np.asarray(correct, dtype=np.uint8)
        missing = (correct == MISSING) | np.isnan(margin) | np.isnan(prob)
        return cls(
            margin=np.where(missing, np.nan, np.clip(margin, -FLOAT16_MAX, FLOAT16_MAX)).astype(np.float16),
            prob=np.where(missing, np.nan, prob).astype(np.float16),
            correct=np.where(missing, MISSING, correct).astype(np.uint8),
        )


@dataclass(frozen=True)
class Trajectory:
    """A run's epochs stacked: ``margin``, ``prob`` (E, N) float16 and ``correct`` (E, N) uint8.

    Row ``e`` is training epoch ``first_epoch + e``; column ``i`` is sample id ``i``. See the
    module docstring for the definitions and the missing-value convention.
    """

    margin: np.ndarray
    prob: np.ndarray
    correct: np.ndarray
    num_classes: int
    first_epoch: int = 0

    def __post_init__(self) -> None:
        shape = self.correct.shape
        for name, array, dtype in (("margin", self.margin, np.float16), ("prob", self.prob, np.float16),
                                   ("correct", self.correct, np.uint8)):
            if array.ndim != 2 or array.shape != shape or array.dtype != dtype:
                raise ValueError(f"Trajectory.{name} must be a 2-d {np.dtype(dtype).name} array of shape {shape}, "
                                 f"got {array.dtype.name} {array.shape}")
        if self.num_classes < 2:
            raise ValueError(f"Trajectory.num_classes must be >= 2, got {self.num_classes}")

    @property
    def num_epochs(self) -> int:
        return int(self.correct.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.correct.shape[1])

    @property
    def observed(self) -> np.ndarray:
        """(E, N) bool: the sample was observed in the epoch."""
        return self.correct != MISSING

    @classmethod
    def from_epochs(cls, epochs: Sequence[EpochRecord], *, num_samples: int, num_classes: int,
                    first_epoch: int = 0) -> Trajectory:
        """Stack epoch records (each of ``num_samples`` samples) into a trajectory; zero epochs allowed."""
        for e, record in enumerate(epochs):
            if record.num_samples != num_samples:
                raise ValueError(f"epoch {first_epoch + e} has {record.num_samples} samples, expected {num_samples}")
        if not epochs:
            empty_f = np.empty((0, num_samples), np.float16)
            return cls(empty_f, empty_f.copy(), np.empty((0, num_samples), np.uint8), num_classes, first_epoch)
        return cls(margin=np.stack([r.margin for r in epochs]), prob=np.stack([r.prob for r in epochs]),
                   correct=np.stack([r.correct for r in epochs]), num_classes=num_classes, first_epoch=first_epoch)

    def window(self, start: int | None = None, stop: int | None = None) -> Trajectory:
        """The epochs ``start <= epoch < stop`` (absolute epoch numbers, like ``range``).

        Pleiss et al. (2020) compute AUM before the first learning-rate drop, when the network
        starts to memorize the noisy labels; a window restricts every statistic to such a phase.
        """
        lo = self.first_epoch if start is None else max(start, self.first_epoch)
        hi = self.first_epoch + self.num_epochs if stop is None else min(stop, self.first_epoch + self.num_epochs)
        hi = max(hi, lo)
        rows = slice(lo - self.first_epoch, hi - self.first_epoch)
        return Trajectory(self.margin[rows], self.prob[rows], self.correct[rows], self.num_classes, lo)
