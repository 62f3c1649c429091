"""Gradient-based explainers: the input gradient, gradient × input and SmoothGrad.

All explain the target logit ``f_t(x) = logits[b, target[b]]`` of a frozen eval-mode copy of
the model (see :mod:`.snapshot`), one batched forward and backward per evaluation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .explanation import PREDICTED, Explanation, check_target, explain_after_forward, resolve_target
from .snapshot import DeviceCopies, frozen_copy
from .target import check_inputs, target_scores


def input_gradient(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """``∂ f_t(x) / ∂x`` for every sample (rows are independent), shaped like ``x``."""
    return gradient_and_logits(model, x, target)[0]


def gradient_and_logits(model: nn.Module, x: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """``(∂ f_t(x)/∂x, logits, t)`` from one forward and backward; ``target=None`` explains the argmax."""
    with torch.inference_mode(False), torch.enable_grad():
        x_in = (x.clone() if x.is_inference() else x).detach().requires_grad_(True)
        logits = model(x_in)
        chosen = resolve_target(logits, target)
        score = target_scores(logits, chosen).sum()
        (grad,) = torch.autograd.grad(score, x_in, allow_unused=True, materialize_grads=True)
    return grad, logits.detach(), chosen


class Gradient:
    """Saliency as the input gradient ``∂f_t/∂x`` (Simonyan et al., 2014; Baehrens et al., 2010)."""

    def __init__(self, model: nn.Module) -> None:
        self._copies = DeviceCopies(frozen_copy(model))

    def __call__(self, x: Tensor, target: Tensor) -> Tensor:
        """Gradient of ``logits[b, target[b]]`` w.r.t. ``x``; same shape, dtype, device as ``x``."""
        target = check_inputs(x, target)
        return input_gradient(self._copies.get(x), x, target)

    def explain(self, x: Tensor, target: Tensor | str = PREDICTED) -> Explanation:
        """Gradient, logits and explained class from one forward and backward (see :mod:`.explanation`)."""
        return Explanation(*gradient_and_logits(self._copies.get(x), x, check_target(x, target)))


class GradientTimesInput(Gradient):
    """Gradient × input, ``x ⊙ ∂f_t/∂x`` (Shrikumar et al., 2016); equals LRP-0 for bias-free ReLU nets."""

    def __call__(self, x: Tensor, target: Tensor) -> Tensor:
        return x * super().__call__(x, target)

    def explain(self, x: Tensor, target: Tensor | str = PREDICTED) -> Explanation:
        gradient, logits, chosen = super().explain(x, target)
        return Explanation(x * gradient, logits, chosen)


class SmoothGrad(Gradient):
    """SmoothGrad (Smilkov et al., 2017): ``(1/n) Σ_s ∂f_t/∂x (x + η_s)``, ``η_s ~ N(0, σ_b²)``.

    ``σ_b = noise_level · (max x_b − min x_b)`` per sample, as in the paper. The noise is drawn
    from a generator seeded with ``seed`` at every call, so results are reproducible.
    """

    def __init__(self, model: nn.Module, n_samples: int = 32, noise_level: float = 0.1, seed: int = 0) -> None:
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        if noise_level < 0:
            raise ValueError(f"noise_level must be >= 0, got {noise_level}")
        super().__init__(model)
        self.n_samples, self.noise_level, self.seed = int(n_samples), float(noise_level), int(seed)

    def __call__(self, x: Tensor, target: Tensor) -> Tensor:
        """Mean gradient over noisy copies of ``x``; same shape, dtype and device as ``x``."""
        with torch.inference_mode(False):  # also when called under inference_mode
            target = check_inputs(x, target)
            model = self._copies.get(x)
            axes = tuple(range(1, x.ndim))
            span = x.amax(dim=axes, keepdim=True) - x.amin(dim=axes, keepdim=True) if axes else x.new_zeros(())
            sigma = self.noise_level * span
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
            total = torch.zeros_like(x)
            for _ in range(self.n_samples):
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                total += input_gradient(model, x + sigma * noise, target)
            return total / self.n_samples

    def explain(self, x: Tensor, target: Tensor | str = PREDICTED) -> Explanation:
        """Relevance, logits at ``x`` (one extra forward) and explained class (see :mod:`.explanation`)."""
        return explain_after_forward(self, self._copies.get(x), x, target)
