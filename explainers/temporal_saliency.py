"""Temporal Saliency Rescaling (TSR): time relevance first, feature relevance only where time matters.

Seed 004 (Ismail et al. 2020, Algorithm 1) observes that saliency methods on multivariate time
series ``x`` (F features × T steps) find the informative *time steps* but smear relevance over
all features within them. TSR decouples the two, for any base explainer ``R``:

1. time relevance: ``Δ_t = Σ_{i,s} |R_{i,s}(x) − R_{i,s}(x with column t := mask)|``, for every t;
2. feature relevance, only for the steps whose min-max normalised ``Δ_t`` exceeds ``alpha``:
   ``Δ_{i,t} = Σ_{j,s} |R_{j,s}(x) − R_{j,s}(x with cell (i, t) := mask)|``, for every feature i;
3. ``R^TSR_{i,t} = norm(Δ_t) · norm_i(Δ_{i,t})`` above the threshold, 0 below it.

Both scores are min-max normalised per sample (time over t; feature over i within each step), as
in the authors' code (``getTwoStepRescaling`` in TS-Interpretability-Benchmark), so ``alpha`` is a
fraction in [0, 1) of the sample's time-relevance range: ``alpha >= 1`` keeps no step and gives
zeros. The masked copies explain the same class as the unmasked input (``target``, or the
class predicted for ``x``).

**Cost**, in samples passed through the base explainer, per input sample:
``1 + T + F · k`` with k the steps above ``alpha`` (at most T). Every masked copy of a batch is
evaluated in chunks of ``max_batch`` copies per base call, so a base call never holds more than
``max_batch`` samples (the memory knob: peak memory ~ ``max_batch`` × one sample's activations in
the base explainer), instead of one call per step and feature (``benchmarks/time_series_saliency.py``
measures both).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .explanation import PREDICTED, Explanation


def _minmax(values: Tensor, dim: int) -> Tensor:
    """Per-slice min-max scaling to [0, 1] along ``dim`` (a constant slice becomes 0)."""
    low = values.amin(dim, keepdim=True)
    span = values.amax(dim, keepdim=True) - low
    return torch.where(span > 0, (values - low) / span.clamp_min(torch.finfo(values.dtype).tiny), torch.zeros_like(values))


class TemporalSaliencyRescaling:
    """TSR around a base explainer (module docstring): ``TemporalSaliencyRescaling(base)(x, target)``.

    Parameters
    ----------
    base:
        Any unhans explainer (``base(x, target) -> relevance like x``; ``base.explain`` when the
        target is ``"predicted"``), e.g. ``Gradient(model)``, ``LRP(model)``.
    alpha:
        Threshold on the min-max normalised time relevance; feature relevance is computed only
        for steps above it. ``alpha >= 1`` returns zeros.
    mask_value:
        What a masked time step or cell is set to: a float, or a tensor broadcastable to one
        sample (F, T) (e.g. per-feature means ``(F, 1)``); its value at the masked cells is used.
    max_batch:
        Masked copies per base-explainer call (memory budget).
    """

    def __init__(self, base, alpha: float = 0.5, mask_value: float | Tensor = 0.0, max_batch: int = 512) -> None:
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.base, self.alpha, self.mask_value, self.max_batch = base, float(alpha), mask_value, int(max_batch)
        self.last_passes = 0  # samples passed through the base explainer by the last call

    def __call__(self, x: Tensor, target: Tensor) -> Tensor:
        """TSR relevance (B, F, T) of ``logits[b, target[b]]``; same dtype and device as ``x``."""
        self._check(x)
        return self._rescaled(x, torch.as_tensor(target, device=x.device).long(), self.base(x, target))

    def explain(self, x: Tensor, target: Tensor | str = PREDICTED) -> Explanation:
        """TSR relevance, the logits and the explained class of the unmasked input."""
        self._check(x)
        first = self.base.explain(x, target)
        return Explanation(self._rescaled(x, first.target, first.relevance), first.logits, first.target)

    def _check(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"TemporalSaliencyRescaling needs inputs of shape (B, features, time), got {shape}")

    def _fill(self, x: Tensor) -> Tensor:
        """The mask value as one (F, T) sample on ``x``'s device and dtype."""
        return torch.as_tensor(self.mask_value, dtype=x.dtype, device=x.device).expand(x.shape[1:])

    def _changes(self, x: Tensor, target: Tensor, reference: Tensor, rows: Tensor, steps: Tensor,
                 features: Tensor | None) -> Tensor:
        """Σ|R(x_b) − R(x_b masked)| for each masked copy k: sample ``rows[k]`` with its time step
        ``steps[k]`` masked (``features`` None) or only its cell (``features[k]``, ``steps[k]``).

        The copies are built and evaluated ``max_batch`` at a time (never all masks at once)."""
        f, t = x.shape[1:]
        fill = self._fill(x)
        out = torch.empty(len(rows), dtype=x.dtype, device=x.device)
        for start in range(0, len(rows), self.max_batch):
            r, s = rows[start:start + self.max_batch], steps[start:start + self.max_batch]
            cells = torch.zeros(len(r), f, t, dtype=torch.bool, device=x.device)
            if features is None:
                cells[torch.arange(len(r), device=x.device), :, s] = True
            else:
                cells[torch.arange(len(r), device=x.device), features[start:start + self.max_batch], s] = True
            relevance = self.base(torch.where(cells, fill, x[r]), target[r])
            out[start:start + len(r)] = (relevance.detach() - reference[r]).abs().flatten(1).sum(1)
            self.last_passes += len(r)
        return out

    def _rescaled(self, x: Tensor, target: Tensor, reference: Tensor) -> Tensor:
        """Steps 1-3 of the module docstring for a checked ``x`` and the base relevance ``reference``."""
        b, f, t = x.shape
        self.last_passes = b
        reference = reference.detach()
        # 1. every time step of every sample masked: B*T copies
        rows = torch.arange(b, device=x.device).repeat_interleave(t)
        steps = torch.arange(t, device=x.device).repeat(b)
        time = _minmax(self._changes(x, target, reference, rows, steps, None).reshape(b, t), 1)
        kept = time > self.alpha                                            # (B, T)
        out = torch.zeros_like(x)
        if not bool(kept.any()):
            return out
        # 2. every cell of the kept steps masked: F copies per kept (sample, step)
        sample, step = kept.nonzero(as_tuple=True)                          # (K,) each
        features = torch.arange(f, device=x.device).repeat(len(step))
        change = self._changes(x, target, reference, sample.repeat_interleave(f), step.repeat_interleave(f), features)
        out[sample, :, step] = _minmax(change.reshape(len(step), f), 1) * time[sample, step][:, None]
        return out
