"""Record per-sample training dynamics from the logits of the training batches.

Per observation of sample ``i`` with given label ``y`` and logits ``z`` the recorder keeps
the margin ``z_y - max_{k != y} z_k`` (Pleiss et al., 2020), the given-label probability
``softmax(z)_y`` (Swayamdipta et al., 2020) and correctness ``z_y > max_{k != y} z_k``
(strict: a tie is not correct; Toneva et al., 2019). See seed 002, Eq. 12-14.

Within one epoch the **last observation of a sample wins**: "last" in the order of
``update`` calls and, inside one batch, of the position in the batch. This is deterministic on
every device: each observation gets a sequence number, a ``scatter_reduce(amax)`` finds the
latest one per sample, and only that one is written (the others go to a scratch slot).

``update`` only validates the batch and copies it (ids, labels, float32 logits) to a pending
list on the logits' device; the margins and probabilities are computed for many batches at once
when the pending rows reach :data:`CHUNK_ELEMENTS` logits, and at ``end_epoch``. Inside a
training loop every distinct tensor kernel runs with cold caches after the backward pass: in the
audit's CPU loop the two dozen kernels of computing per batch took ~0.45 ms, the validation and
copies of ``update`` ~0.1 ms (``benchmarks/recorder_overhead.py`` measures the whole). Nothing is
copied to the host, and nothing waits on the device, before :meth:`DynamicsRecorder.end_epoch`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from .statistics import statistics_from_trajectory
from .trajectory import MISSING, EpochRecord, Trajectory
from .trajectory_store import EpochWriter, read_epochs, read_header, stored_epochs


_LOG2_E = 1.4426950408889634
CHUNK_ELEMENTS = 1 << 20
"""Pending logits (rows x K) beyond which ``update`` folds them into the epoch (4 MB as float32)."""


def _given_label_probability(z: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    """``softmax(z)_y = 1 / sum_k 2^((z_k - z_y) log2 e)`` for (B, K) logits ``z`` and (B,) ``given = z_y``.

    Stable (the terms overflow only to +inf, giving probability 0) and built from elementwise
    kernels: on CPU, ``exp``/``softmax``/``logsumexp`` on a small batch may enter a threaded
    code path that stalls for milliseconds when the cores are busy, ``exp2`` does not.
    """
    return torch.exp2((z - given.unsqueeze(1)) * _LOG2_E).sum(dim=1).reciprocal()


class DynamicsRecorder:
    """Accumulate per-sample margins, probabilities and correctness over training epochs.

    Parameters
    ----------
    num_samples:
        N, the number of training samples; sample ids are ``0..N-1``.
    num_classes:
        K, the number of logits per sample (at least 2).
    store:
        Optional run directory. Each closed epoch is persisted atomically to
        ``<store>/dynamics/epoch-XXXXX.npz`` (see :mod:`spray.dynamics.trajectory_store`), and a
        new recorder on the same store resumes after the last persisted epoch. An epoch that was
        not closed with :meth:`end_epoch` before a crash is not persisted: after a restart it is
        simply recorded again. Use :attr:`num_epochs` to align a resumed training loop.
        The file is written by a background thread so that the loop does not wait for the disk;
        readers in this process wait for it, and so does interpreter exit. Call :meth:`flush`
        (or leave a ``with`` block) before another *process* reads the store.

    Memory: 20 bytes per sample on the logits' device ((N+1, 3) float32 observations and an (N,)
    int64 sequence number), at most about ``4 * CHUNK_ELEMENTS`` bytes of pending batches there,
    plus the closed epochs on the host (5 bytes per sample and epoch).
    """

    def __init__(self, num_samples: int, num_classes: int, store: str | os.PathLike[str] | None = None) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.num_samples = int(num_samples)
        self.num_classes = int(num_classes)
        self.store = None if store is None else Path(store)
        self._epochs: list[EpochRecord] = []
        self._writer = None if self.store is None else EpochWriter(self.store)
        if self.store is not None:
            self._epochs = read_epochs(self.store, num_samples=self.num_samples, num_classes=self.num_classes)
        self._observations: torch.Tensor | None = None  # (N + 1, 3) float32: margin, prob, correct; NaN = unseen
        self._last_seq: torch.Tensor | None = None
        self._next_seq = 0
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (idx, logits, y) copies
        self._pending_rows = 0

    @classmethod
    def load(cls, store: str | os.PathLike[str]) -> DynamicsRecorder:
        """Resume the recorder of ``store``, taking N and K from its persisted epochs.

        Raises ``FileNotFoundError`` if no epoch has been persisted yet.
        """
        paths = stored_epochs(store)
        if not paths:
            raise FileNotFoundError(f"no persisted training dynamics under {Path(store) / 'dynamics'}")
        num_samples, num_classes = read_header(paths[0])
        return cls(num_samples, num_classes, store=store)

    @property
    def num_epochs(self) -> int:
        """Number of closed (and, with a store, persisted) epochs."""
        return len(self._epochs)

    @property
    def trajectory(self) -> Trajectory:
        """The closed epochs as a :class:`Trajectory` (the open epoch is not included)."""
        return Trajectory.from_epochs(self._epochs, num_samples=self.num_samples, num_classes=self.num_classes)

    def __repr__(self) -> str:
        return (f"DynamicsRecorder(num_samples={self.num_samples}, num_classes={self.num_classes}, "
                f"store={self.store!r}, num_epochs={self.num_epochs})")

    def update(self, idx: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Record one batch of the current epoch.

        ``idx`` (B,) integer sample ids in ``[0, N)``, ``logits`` (B, K) float on any device
        (any float dtype, computed in float32), ``y`` (B,) integer given labels in ``[0, K)``.
        All three are copied (``idx`` and ``y`` to the logits' device), so the caller may reuse
        or modify them afterwards. Ids may repeat and come in any order; the last observation of
        a sample within the epoch wins. Range checks raise ``ValueError`` for CPU tensors; on
        other devices they are asynchronous device asserts.
        """
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] != self.num_classes:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"logits must be a (B, {self.num_classes}) tensor, got {shape}")
        if not logits.is_floating_point():
            raise ValueError(f"logits must be floating point, got {logits.dtype}")
        device = logits.device
        idx = torch.as_tensor(idx)
        y = torch.as_tensor(y)
        batch = logits.shape[0]
        for name, tensor in (("idx", idx), ("y", y)):
            if tensor.shape != (batch,):
                raise ValueError(f"{name} must have shape ({batch},) to match logits, got {tuple(tensor.shape)}")
            if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
                raise ValueError(f"{name} must be an integer tensor, got {tensor.dtype}")
        if batch == 0:
            return
        self._check_ranges(idx, y)
        if self._pending and self._pending[0][1].device != device:
            self._fold_pending()
        self._pending.append((idx.to(device, torch.long, non_blocking=True, copy=True),
                              logits.detach().to(torch.float32, copy=True),
                              y.to(device, torch.long, non_blocking=True, copy=True)))
        self._pending_rows += batch
        if self._pending_rows * self.num_classes >= CHUNK_ELEMENTS:
            self._fold_pending()

    def _fold_pending(self) -> None:
        """Compute the pending batches' observations and write each sample's latest one."""
        if not self._pending:
            return
        if len(self._pending) == 1:
            idx, z, y = self._pending[0]
        else:
            idx, z, y = (torch.cat(parts) for parts in zip(*self._pending))
        self._pending.clear()
        self._pending_rows = 0
        device = z.device
        self._ensure_buffers(device)
        with torch.no_grad():
            label = y.unsqueeze(1)
            given = z.gather(1, label).squeeze(1)
            best_other = z.scatter(1, label, float("-inf")).amax(dim=1)
            observation = torch.stack([
                given - best_other,              # margin
                _given_label_probability(z, given),
                (given > best_other).float(),    # correct (strict)
            ], dim=1)
            rows = idx.shape[0]
            seq = torch.arange(self._next_seq, self._next_seq + rows, device=device, dtype=torch.long)
            self._next_seq += rows
            self._last_seq.scatter_reduce_(0, idx, seq, reduce="amax")
            latest = self._last_seq.gather(0, idx) == seq
            slot = torch.where(latest, idx, self.num_samples)  # superseded observations go to the scratch row
            self._observations.index_put_((slot,), observation)

    def end_epoch(self) -> int:
        """Close the current epoch, start persisting it if there is a store, and return its number.

        Samples not observed since the previous ``end_epoch`` are recorded as missing. This is
        the only place the recorder copies from the device (once per epoch). Raises ``OSError``
        if an earlier epoch could not be persisted (this epoch is still closed in memory).
        """
        epoch = self.num_epochs
        self._fold_pending()
        if self._observations is None:
            record = EpochRecord.missing(self.num_samples)
        else:
            margin, prob, correct = self._observations[: self.num_samples].cpu().numpy().T
            record = EpochRecord.quantize(margin, prob, np.where(np.isnan(correct), MISSING, correct))
        self._epochs.append(record)
        self._reset_buffers()
        if self._writer is not None:
            self._writer.submit(epoch, record, num_classes=self.num_classes)
        return epoch

    def flush(self) -> None:
        """Block until every closed epoch is on disk; raises ``OSError`` if one could not be written."""
        if self._writer is not None:
            self._writer.flush()

    def __enter__(self) -> DynamicsRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()

    def statistics(self, **options: Any) -> pa.Table:
        """Per-sample statistics of the closed epochs; ``options`` go to :func:`statistics_from_trajectory`."""
        return statistics_from_trajectory(self.trajectory, **options)

    def _check_ranges(self, idx: torch.Tensor, y: torch.Tensor) -> None:
        if idx.device.type == "cpu":
            low, high = (int(v) for v in torch.aminmax(idx))
            if low < 0 or high >= self.num_samples:
                raise ValueError(f"idx must lie in [0, {self.num_samples}), got [{low}, {high}]")
            low, high = (int(v) for v in torch.aminmax(y))
            if low < 0 or high >= self.num_classes:
                raise ValueError(f"y must lie in [0, {self.num_classes}), got [{low}, {high}]")
        elif hasattr(torch, "_assert_async"):
            torch._assert_async(((idx >= 0) & (idx < self.num_samples)).all(), "idx out of range [0, num_samples)")
            torch._assert_async(((y >= 0) & (y < self.num_classes)).all(), "y out of range [0, num_classes)")

    def _ensure_buffers(self, device: torch.device) -> None:
        if self._observations is None:
            # the last row is scratch space for superseded observations
            self._observations = torch.full((self.num_samples + 1, 3), float("nan"), device=device)
            self._last_seq = torch.full((self.num_samples,), -1, dtype=torch.long, device=device)
        elif self._observations.device != device:
            self._observations, self._last_seq = self._observations.to(device), self._last_seq.to(device)

    def _reset_buffers(self) -> None:
        if self._observations is not None:
            self._observations.fill_(float("nan"))
            self._last_seq.fill_(-1)
        self._next_seq = 0
