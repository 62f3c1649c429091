"""Integrated Gradients and its smoothed variant.

Integrated Gradients (Sundararajan et al., 2017) with the midpoint Riemann rule of seed 003
(Samek et al., Appendix A, Algorithm 5)::

    R = (x − x̄) ⊙ (1/T) Σ_{t=1..T} ∇f_t(x̄ + (t − ½)/T · (x − x̄))

which satisfies completeness ``Σ R ≈ f_t(x) − f_t(x̄)`` up to the quadrature error. The smoothed
variant averages this over ``S`` random baselines ``x̄_s = x̄ + N(0, σ²)`` (Algorithm 5, which
starts each integration "at some random location near the origin").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .gradient import input_gradient
from .explanation import PREDICTED, Explanation, explain_after_forward
from .snapshot import DeviceCopies, frozen_copy
from .target import check_inputs


class IntegratedGradients:
    """Integrated Gradients: ``IntegratedGradients(model)(x, target) -> attribution`` shaped like ``x``.

    Parameters
    ----------
    steps:
        Number ``T`` of midpoint-rule nodes on the straight path from the baseline to ``x``.
    baseline:
        ``None`` (zeros), a float, or a tensor broadcastable to ``x``.
    internal_batch_size:
        Rows per forward/backward pass; several path points of the whole batch are evaluated
        together. ``None`` evaluates one path point (``B`` rows) at a time.
    smooth_samples:
        ``S > 0`` enables the smoothed variant with ``S`` noisy baselines of standard deviation
        ``smooth_sigma`` (input units); ``0`` is plain IG.
    seed:
        Seed of the baseline noise (the generator is re-seeded at every call).
    """

    def __init__(
        self,
        model: nn.Module,
        steps: int = 64,
        baseline: float | Tensor | None = None,
        internal_batch_size: int | None = None,
        smooth_samples: int = 0,
        smooth_sigma: float = 0.1,
        seed: int = 0,
    ) -> None:
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if internal_batch_size is not None and int(internal_batch_size) < 1:
            raise ValueError(f"internal_batch_size must be >= 1 or None, got {internal_batch_size}")
        if int(smooth_samples) < 0:
            raise ValueError(f"smooth_samples must be >= 0, got {smooth_samples}")
        if smooth_sigma < 0:
            raise ValueError(f"smooth_sigma must be >= 0, got {smooth_sigma}")
        self.steps = int(steps)
        self.baseline = baseline
        self.internal_batch_size = None if internal_batch_size is None else int(internal_batch_size)
        self.smooth_samples = int(smooth_samples)
        self.smooth_sigma = float(smooth_sigma)
        self.seed = int(seed)
        self._copies = DeviceCopies(frozen_copy(model))

    def _baseline(self, x: Tensor) -> Tensor:
        if self.baseline is None:
            return torch.zeros_like(x)
        return torch.as_tensor(self.baseline, dtype=x.dtype, device=x.device).expand_as(x)

    def _path_integral(self, model: nn.Module, x: Tensor, baseline: Tensor, target: Tensor) -> Tensor:
        """``(x − x̄) ⊙`` mean gradient at the ``T`` midpoints, evaluated in chunks of path points."""
        batch = x.shape[0]
        per_pass = max(1, (self.internal_batch_size or batch) // max(batch, 1))
        alphas = (torch.arange(self.steps, device=x.device, dtype=x.dtype) + 0.5) / self.steps
        delta = x - baseline
        total = torch.zeros_like(x)
        for chunk in alphas.split(per_pass):
            shape = (len(chunk),) + (1,) * x.ndim
            points = (baseline.unsqueeze(0) + chunk.view(shape) * delta.unsqueeze(0)).reshape(-1, *x.shape[1:])
            gradients = input_gradient(model, points, target.repeat(len(chunk)))
            total += gradients.view(len(chunk), *x.shape).sum(0)
        return delta * total / self.steps

    def explain(self, x: Tensor, target: Tensor | str = PREDICTED) -> Explanation:
        """Attribution, logits (one extra forward) and explained class (see :mod:`.explanation`)."""
        return explain_after_forward(self, self._copies.get(x), x, target)

    def __call__(self, x: Tensor, target: Tensor) -> Tensor:
        """Attribution of ``logits[b, target[b]]``; same shape, dtype and device as ``x``."""
        with torch.inference_mode(False):  # also when called under inference_mode
            target = check_inputs(x, target)
            model = self._copies.get(x)
            baseline = self._baseline(x)
            if self.smooth_samples == 0:
                return self._path_integral(model, x, baseline, target)
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
            total = torch.zeros_like(x)
            for _ in range(self.smooth_samples):
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                total += self._path_integral(model, x, baseline + self.smooth_sigma * noise, target)
            return total / self.smooth_samples
