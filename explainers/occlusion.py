"""Occlusion: the drop of the target score when a window of the input is replaced by ``fill``.

Zeiler & Fergus (2014); seed 003 (Samek et al., Sec. IV). For every window position ``W``
(sliding with ``stride``, never wrapping around an edge; a last window flush with the edge is
added when the stride does not reach it, so every element is covered)::

    Δ_W = f_t(x) − f_t(x with x_W := fill),      R_i = mean_{W ∋ i} Δ_W

With window 1 on a linear model ``f(x) = wᵀx + b`` and ``fill = 0``, ``R_i = w_i x_i``.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from .explanation import PREDICTED, Explanation, explain_after_forward
from .snapshot import DeviceCopies, frozen_copy
from .target import check_inputs, target_scores


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis: every ``stride``, plus one flush with the end if needed."""
    if window > size:
        raise ValueError(f"occlusion window {window} is larger than the input size {size}")
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


class Occlusion:
    """Occlusion explainer: ``Occlusion(model, window)(x, target) -> score drop`` shaped like ``x``.

    Parameters
    ----------
    window:
        Window size. An int covers the trailing sample axes except the first (channels) when a
        sample has ≥ 2 axes — e.g. ``window=4`` on (C, H, W) occludes 4×4 patches of all
        channels — and the only axis of 1-d samples. A tuple gives sizes of the last
        ``len(window)`` axes; the leading sample axes are occluded entirely.
    stride:
        Step between windows, same form as ``window``; defaults to ``window``.
    fill:
        Value written into the window (float, or tensor broadcastable to one sample).
    batch_size:
        Rows per forward pass (occluded copies of the batch are evaluated together).
    """

    def __init__(
        self,
        model: nn.Module,
        window: int | tuple[int, ...] = 8,
        stride: int | tuple[int, ...] | None = None,
        fill: float | Tensor = 0.0,
        batch_size: int = 256,
    ) -> None:
        windows = (window,) if isinstance(window, int) else tuple(window)
        strides = windows if stride is None else ((stride,) if isinstance(stride, int) else tuple(stride))
        if not windows or min(windows) < 1 or len(strides) != len(windows) or min(strides) < 1:
            raise ValueError(f"window and stride must be positive with equal lengths, got {window!r}, {stride!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.window, self.stride = window, stride
        self._windows, self._strides = windows, strides
        self._spread_int = isinstance(window, int)
        self.fill, self.batch_size = fill, int(batch_size)
        self._copies = DeviceCopies(frozen_copy(model))

    def _axes(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Sample axes the window slides over."""
        count = len(sample_shape) - 1 if self._spread_int and len(sample_shape) >= 2 else len(self._windows)
        if count > len(sample_shape) or count < 1:
            raise ValueError(f"window {self.window!r} does not fit samples of shape {sample_shape}")
        return tuple(range(len(sample_shape) - count, len(sample_shape)))

    def _masks(self, sample_shape: tuple[int, ...], device: torch.device) -> Tensor:
        """Boolean masks (P, *sample_shape), one per window position."""
        axes = self._axes(sample_shape)
        windows = self._windows * len(axes) if self._spread_int else self._windows
        strides = self._strides * len(axes) if self._spread_int else self._strides
        starts = [_starts(sample_shape[a], w, s) for a, w, s in zip(axes, windows, strides)]
        positions = torch.tensor(list(itertools.product(*starts)), device=device)  # (P, len(axes))
        mask = torch.ones((len(positions),) + (1,) * len(sample_shape), dtype=torch.bool, device=device)
        for k, (axis, width) in enumerate(zip(axes, windows)):
            index = torch.arange(sample_shape[axis], device=device)
            inside = (index >= positions[:, k : k + 1]) & (index < positions[:, k : k + 1] + width)  # (P, n)
            shape = [len(positions)] + [1] * len(sample_shape)
            shape[1 + axis] = sample_shape[axis]
            mask = mask & inside.view(shape)
        return mask.expand(len(positions), *sample_shape)

    def explain(self, x: Tensor, target: Tensor | str = PREDICTED) -> Explanation:
        """Attribution, logits (one extra forward) and explained class (see :mod:`.explanation`)."""
        return explain_after_forward(self, self._copies.get(x), x, target)

    @torch.no_grad()
    def __call__(self, x: Tensor, target: Tensor) -> Tensor:
        """Mean score drop of the windows covering each element; same shape, dtype, device as ``x``."""
        target = check_inputs(x, target)
        model = self._copies.get(x)
        batch, sample_shape = x.shape[0], tuple(x.shape[1:])
        fill = torch.as_tensor(self.fill, dtype=x.dtype, device=x.device)
        reference = target_scores(model(x), target)
        masks = self._masks(sample_shape, x.device)
        total = torch.zeros_like(x)
        per_pass = max(1, self.batch_size // max(batch, 1))
        for chunk in masks.split(per_pass):
            occluded = torch.where(chunk.unsqueeze(1), fill, x.unsqueeze(0)).reshape(-1, *sample_shape)
            scores = target_scores(model(occluded), target.repeat(len(chunk))).view(len(chunk), batch)
            drop = (reference.unsqueeze(0) - scores).to(x.dtype)
            total += torch.einsum("pb,p...->b...", drop, chunk.to(x.dtype))
        return total / masks.sum(0).to(x.dtype)
