"""Infidelity and max-sensitivity of explanations (Yeh et al., 2019; seed 002).

Infidelity: how well the heatmap Φ(x) predicts the change of the explained output under random
perturbations I of the input,

    INFD(Φ, f, x) = E_I[ (Iᵀ Φ(x) − (f(x) − f(x − I)))² ],   I ~ N(0, σ² 𝟙)

estimated with ``perturbations`` draws per sample (0 for a model that is linear in x explained by
its gradient times the perturbation, i.e. by the gradient).

Max-sensitivity: how much the explanation changes within a small ball around the input,

    SENS_max(Φ, x) = max_{‖δ‖_∞ ≤ r} ‖Φ(x + δ) − Φ(x)‖₂ / ‖Φ(x)‖₂

estimated as the maximum over ``perturbations`` uniform draws of δ (normalized by ‖Φ(x)‖₂, as
Quantus's ``MaxSensitivity`` with ``norm_denominator``). Both run all draws of a block of samples
as one batch.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .target import check_inputs, target_scores


def infidelity(
    model: nn.Module, x: Tensor, target: Tensor, relevance: Tensor, *, perturbations: int = 32, noise: float = 0.1,
    batch_size: int = 1024, generator: torch.Generator | None = None,
) -> Tensor:
    """Per-sample infidelity (B,) of ``relevance`` (like ``x``) with Gaussian perturbations of std ``noise``."""
    target = check_inputs(x, target)
    if relevance.shape != x.shape:
        raise ValueError(f"relevance {tuple(relevance.shape)} must have the shape of x {tuple(x.shape)}")
    if perturbations < 1 or noise <= 0:
        raise ValueError(f"perturbations must be >= 1 and noise > 0, got {perturbations} and {noise}")
    per_block = max(1, batch_size // perturbations)
    out = []
    with torch.no_grad():
        for start in range(0, len(x), per_block):
            xs, rs, ts = x[start:start + per_block], relevance[start:start + per_block], target[start:start + per_block]
            shape = (len(xs), perturbations, *xs.shape[1:])
            draws = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype) * noise
            perturbed = (xs.unsqueeze(1) - draws).reshape(-1, *xs.shape[1:])
            inputs = torch.cat([xs, perturbed])
            targets = torch.cat([ts, ts.repeat_interleave(perturbations)])
            scores = target_scores(model(inputs), targets).double()
            drop = scores[:len(xs), None] - scores[len(xs):].view(len(xs), perturbations)
            predicted = (draws.flatten(2).double() * rs.flatten(1).double().unsqueeze(1)).sum(2)
            out.append(((predicted - drop) ** 2).mean(1))
    return torch.cat(out)


def max_sensitivity(
    explain: Callable[[Tensor, Tensor], Tensor], x: Tensor, target: Tensor, *, radius: float = 0.02,
    perturbations: int = 10, batch_size: int = 256, generator: torch.Generator | None = None,
) -> Tensor:
    """Per-sample max-sensitivity (B,) of ``explain(x, target) -> relevance like x`` within ‖δ‖_∞ ≤ ``radius``."""
    target = check_inputs(x, target)
    if perturbations < 1 or radius <= 0:
        raise ValueError(f"perturbations must be >= 1 and radius > 0, got {perturbations} and {radius}")
    per_block = max(1, batch_size // (perturbations + 1))
    out = []
    for start in range(0, len(x), per_block):
        xs, ts = x[start:start + per_block], target[start:start + per_block]
        shape = (len(xs), perturbations, *xs.shape[1:])
        delta = (torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * radius
        inputs = torch.cat([xs, (xs.unsqueeze(1) + delta).reshape(-1, *xs.shape[1:])])
        relevance = explain(inputs, torch.cat([ts, ts.repeat_interleave(perturbations)])).detach().flatten(1).double()
        base = relevance[:len(xs)]
        moved = relevance[len(xs):].view(len(xs), perturbations, -1)
        change = torch.linalg.vector_norm(moved - base.unsqueeze(1), dim=2).amax(1)
        out.append(change / torch.linalg.vector_norm(base, dim=1).clamp(min=1e-12))
    return torch.cat(out)
