"""Faithfulness by region perturbation: does removing what a heatmap calls relevant hurt the model most?

Pixel-flipping / region perturbation (seed 003, Algorithm 3; Samek et al. 2017): the input is
cut into square regions, the regions are ranked by their summed relevance, and step by step the
next ``regions_per_step`` regions in that order are replaced. The explained output is recorded
after every step, giving a curve ``f(x^(0)), f(x^(1)), …, f(x^(L))`` per sample. Most relevant
first (MoRF), a faithful heatmap makes the score fall fast; least relevant first (LeRF), slowly.

    AOPC = 1/(L+1) Σ_{k=0..L} (f(x^(0)) − f(x^(k)))          (area over the MoRF curve)
    ABPC = 1/(L+1) Σ_{k=0..L} (f_LeRF(x^(k)) − f_MoRF(x^(k)))  (area between the curves)

Replacement (``replacement``), per sample:

- ``black``: the sample's minimum over all its features (as Quantus's ``perturb_baseline="black"``);
- ``mean``: the sample's per-channel mean;
- ``blur``: a Gaussian-blurred copy of the sample (σ = the region size);
- ``inpaint``: the removed pixels filled from their surroundings by harmonic diffusion (repeated
  4-neighbour averaging with the kept pixels fixed), the inpainting-like replacement seed 003
  uses so that the removal itself does not add sharp edges the model reacts to.

Everything is batched: all steps of a block of samples form one batch of perturbed inputs, and
the model runs on ``batch_size`` of them at a time, on the device the inputs are on. There is no
Python loop over samples or steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .target import check_inputs

REPLACEMENTS = ("black", "mean", "blur", "inpaint")
ORDERS = ("morf", "lerf", "random")
INPAINT_ITERATIONS = 24  # 4-neighbour averaging sweeps of the inpainting replacement


@dataclass
class PerturbationCurves:
    """Scores after each perturbation step; column 0 is the unperturbed input.

    logits, probabilities: (B, L+1) the explained class's logit and softmax probability;
    removed: (L+1,) the fraction of the input's regions replaced at each point.
    """

    logits: Tensor
    probabilities: Tensor
    removed: Tensor

    def aopc(self, probability: bool = False) -> Tensor:
        """Per-sample AOPC (B,): the mean drop from the unperturbed score over the curve's points."""
        curve = self.probabilities if probability else self.logits
        return (curve[:, :1] - curve).mean(1)


def abpc(morf: PerturbationCurves, lerf: PerturbationCurves, probability: bool = False) -> Tensor:
    """Per-sample area between the LeRF and the MoRF curves (B,): positive for a faithful heatmap."""
    pick = (lambda c: c.probabilities) if probability else (lambda c: c.logits)
    return (pick(lerf) - pick(morf)).mean(1)


def region_scores(relevance: Tensor, spatial_dims: int, region: int) -> Tensor:
    """Summed relevance per region: (B, C, *spatial) or (B, *spatial) → (B, regions), row-major order."""
    r = relevance if relevance.ndim == spatial_dims + 2 else relevance.unsqueeze(1)
    r = r.sum(1, keepdim=True).to(torch.promote_types(r.dtype, torch.float32))
    if spatial_dims == 1:
        r, kernel = r.unsqueeze(2), (1, region)
    else:
        kernel = (region, region)
    # a sum per region (divisor 1), edge regions that the image cuts short included
    return F.avg_pool2d(r, kernel, stride=kernel, ceil_mode=True, divisor_override=1).flatten(1)


def region_order(scores: Tensor, order: str, generator: torch.Generator | None = None) -> Tensor:
    """Rank of each region in the removal order (B, R): 0 is removed first.

    ``morf``: by descending relevance, ``lerf``: ascending (ties in index order, both stable),
    ``random``: a uniformly random permutation per sample (``generator`` on the scores' device).
    """
    if order not in ORDERS:
        raise ValueError(f"order={order!r} is not one of {', '.join(ORDERS)}")
    if order == "random":
        keys = torch.rand(scores.shape, generator=generator, device=scores.device)
        sequence = torch.argsort(keys, dim=1)
    else:
        sequence = torch.argsort(scores, dim=1, descending=order == "morf", stable=True)
    rank = torch.empty_like(sequence)
    rank.scatter_(1, sequence, torch.arange(scores.shape[1], device=scores.device).expand_as(sequence))
    return rank


def pixel_flipping(
    model: nn.Module, x: Tensor, target: Tensor, relevance: Tensor, *, order: str = "morf", region: int = 1,
    regions_per_step: int = 1, max_steps: int | None = None, replacement: str = "black", batch_size: int = 1024,
    generator: torch.Generator | None = None, points: Tensor | None = None,
) -> PerturbationCurves:
    """Region-perturbation curves of ``model`` for ``x`` (B, C, *spatial) with 1 or 2 spatial dims.

    relevance: (B, C, *spatial) or (B, *spatial), summed over channels; region: side of a square
    region in pixels (1 = pixel-flipping); regions_per_step: regions replaced per step; max_steps:
    stop after this many steps (default: until everything is replaced); points: evaluate only these
    step indices (default 0..L; the first and last point are the same for every order, so several
    curves of the same samples may share them). The model runs in eval mode
    under ``torch.no_grad`` (it is not modified). With ``region=1`` and single-channel inputs this is
    Quantus's ``PixelFlipping(features_in_step=regions_per_step)`` plus the unperturbed point.
    """
    target = check_inputs(x, target)
    spatial = x.ndim - 2
    if spatial not in (1, 2):
        raise ValueError(f"x must be (B, C, L) or (B, C, H, W), got shape {tuple(x.shape)}")
    if relevance.shape[0] != x.shape[0] or tuple(relevance.shape[-spatial:]) != tuple(x.shape[-spatial:]):
        raise ValueError(f"relevance {tuple(relevance.shape)} does not match inputs {tuple(x.shape)}")
    if replacement not in REPLACEMENTS:
        raise ValueError(f"replacement={replacement!r} is not one of {', '.join(REPLACEMENTS)}")
    for name, value in (("region", region), ("regions_per_step", regions_per_step), ("batch_size", batch_size)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not torch.isfinite(relevance).all():
        raise ValueError("relevance contains NaN or infinite values")
    scores = region_scores(relevance.to(x.device), spatial, region)
    rank = region_order(scores, order, generator)
    count = scores.shape[1]
    steps = math.ceil(count / regions_per_step) if max_steps is None else min(max_steps, math.ceil(count / regions_per_step))
    index = torch.arange(steps + 1, device=x.device) if points is None else torch.as_tensor(points, device=x.device)
    if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) > steps:
        raise ValueError(f"points must be step indices in 0..{steps}, got {index.tolist()}")
    removed_after = torch.clamp(index * regions_per_step, max=count)                               # (P,)
    steps = len(index) - 1  # from here on: the number of evaluated points minus one
    pixel_rank = _pixel_ranks(rank, x.shape[-spatial:], region)                                    # (B, *spatial)
    fixed = _fixed_replacement(x, replacement, region)
    per_block = max(1, batch_size // (steps + 1))
    logits, probs = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(x), per_block):  # a block of samples × every step at once
                xs, ranks = x[start:start + per_block], pixel_rank[start:start + per_block]
                mask = ranks.unsqueeze(1) < removed_after.view(1, -1, *[1] * spatial)              # (b, L+1, *spatial)
                mask = mask.unsqueeze(2)                                                           # (b, L+1, 1, *sp)
                expanded = xs.unsqueeze(1).expand(-1, steps + 1, *xs.shape[1:])
                if replacement == "inpaint":
                    filled = _inpaint(expanded.reshape(-1, *xs.shape[1:]), mask.reshape(-1, 1, *xs.shape[2:]),
                                      spatial).view_as(expanded)
                else:
                    filled = fixed[start:start + per_block].unsqueeze(1).expand_as(expanded)
                perturbed = torch.where(mask, filled, expanded).reshape(-1, *xs.shape[1:])
                out = torch.cat([model(perturbed[i:i + batch_size]) for i in range(0, len(perturbed), batch_size)])
                out = out.view(len(xs), steps + 1, -1).float()
                t = target[start:start + per_block].view(-1, 1, 1).expand(-1, steps + 1, 1)
                logits.append(out.gather(2, t)[..., 0])
                probs.append(out.softmax(2).gather(2, t)[..., 0])
    finally:
        model.train(was_training)
    return PerturbationCurves(torch.cat(logits), torch.cat(probs), removed_after.float() / count)


def _pixel_ranks(rank: Tensor, spatial_shape, region: int) -> Tensor:
    """Each pixel's region rank (B, *spatial) from the regions' ranks (B, R)."""
    grid = [math.ceil(s / region) for s in spatial_shape]
    r = rank.view(-1, *grid)
    for axis, size in enumerate(spatial_shape):
        r = r.repeat_interleave(region, dim=axis + 1).narrow(axis + 1, 0, size)
    return r


def _fixed_replacement(x: Tensor, replacement: str, region: int) -> Tensor:
    """The replacement values (like ``x``) of the replacements that do not depend on the mask."""
    spatial = x.ndim - 2
    dims = tuple(range(1, x.ndim))
    if replacement == "black":
        return x.amin(dim=dims, keepdim=True).expand_as(x)
    if replacement == "mean":
        return x.mean(dim=dims[1:], keepdim=True).expand_as(x)
    if replacement == "blur":
        return _gaussian_blur(x, sigma=float(region), spatial=spatial)
    return x  # inpaint: computed per step


def _gaussian_blur(x: Tensor, sigma: float, spatial: int) -> Tensor:
    """Separable Gaussian blur (σ in pixels, kernel ±3σ, reflect padding), per channel."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    out = x
    for axis in range(spatial):
        shape = [1, 1] + [1] * spatial
        shape[2 + axis] = len(kernel)
        pad = [0, 0] * spatial
        pad[2 * (spatial - 1 - axis)] = pad[2 * (spatial - 1 - axis) + 1] = radius
        padded = F.pad(out, pad, mode="reflect" if out.shape[2 + axis] > radius else "replicate")
        conv = F.conv2d if spatial == 2 else F.conv1d
        out = conv(padded, kernel.view(shape).expand(c, *shape[1:]), groups=c)
    return out


def _inpaint(x: Tensor, mask: Tensor, spatial: int) -> Tensor:
    """Harmonic fill of the masked pixels of ``x`` (N, C, *spatial) from the kept ones (mask (N, 1, *spatial))."""
    keep = (~mask).to(x.dtype)
    kept = keep.sum(dim=tuple(range(2, x.ndim)), keepdim=True)
    start = (x * keep).sum(dim=tuple(range(2, x.ndim)), keepdim=True) / kept.clamp(min=1)
    filled = torch.where(mask, start.expand_as(x), x)
    if spatial == 2:
        kernel = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=x.dtype, device=x.device).view(1, 1, 3, 3)
        conv, pad = F.conv2d, (1, 1, 1, 1)
    else:
        kernel = torch.tensor([1, 0, 1], dtype=x.dtype, device=x.device).view(1, 1, 3)
        conv, pad = F.conv1d, (1, 1)
    c = x.shape[1]
    kernel = kernel.expand(c, *kernel.shape[1:]).contiguous()
    ones = torch.ones_like(x[:, :1])
    neighbours = conv(F.pad(ones, pad), kernel[:1])  # how many neighbours each pixel has (edges: fewer)
    for _ in range(INPAINT_ITERATIONS):
        average = conv(F.pad(filled, pad), kernel, groups=c) / neighbours
        filled = torch.where(mask, average, x)
    return filled
