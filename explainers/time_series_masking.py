"""Judging time-series attributions by masking (seed 004, §4.2–4.3; issue #15).

On synthetic data whose informative cells are known (``benchmarks/time_series_data.py``), a
saliency map (n, F, T) is judged twice at every level d of the grid ``[0, 0.1, …, 1.0]``:

1. **Accuracy drop.** The most salient cells whose saliency makes up a share ≈ d of the sample's
   total are replaced by fresh values of the background process ("the original distribution",
   so the masked inputs stay in distribution) and the model's accuracy is recorded.
2. **Weighted precision and recall** of those masked cells against the informative ones.

Definitions, from the authors' code ``ayaabdelsalam91/TS-Interpretability-Benchmark``
(read, not copied; this is an independent batched torch implementation):

- **Saliency** is rescaled before anything else (``Scripts/Helper.py:
  givenAttGetRescaledSaliency``): ``|R|``, then min-max scaled to [0, 1] per sample over all
  F·T cells (the least salient cell gets 0). Ranking, the saliency share and the precision /
  recall weights all use this rescaled saliency. A constant map (all 0 after rescaling) is
  treated here as uniform (each cell a share 1/(F·T)).
- **Cells masked at d** (``Helper.getIndexOfAllhighestSalientValues``, ``Scripts/createMasks.py``):
  cells sorted by decreasing saliency; the k most salient, k the smallest number ≥ 1 whose
  cumulative share reaches d. d = 0 masks nothing, d = 1 masks everything. Ties are broken
  at random here (seeded), so equal saliencies (an oracle mask, occlusion windows) are not
  ranked by cell index.
- **Replacement** (``Helper.maskData``/``generateNewSample``, ``Scripts/getMaskedAccuracy.py``):
  the repo draws *one* background sample per level and copies it into every test sample's
  masked cells; at d = 1 every test sample becomes that same sample. Here every sample gets
  its own background draw, reused at every level (nested masks, and — with the same seed —
  the same replacement values for every method compared: common random numbers).
- **Weighted precision / recall** (``Scripts/getPrecisionRecall.py``), per sample, with w the
  rescaled saliency, M the masked cells and I the informative ones:
  ``TP = Σ_{M∩I} w``, ``FP = Σ_{M∖I} w``, ``FN = Σ_{I∖M} w``, precision ``TP/(TP+FP)``, recall
  ``TP/(TP+FN)``; each averaged over the samples whose denominator is positive.
- **AUP, AUR** (``Scripts/getAccuracyMetrics.py``): trapezoidal areas under precision and
  recall over the *interior* levels 0.1 … 0.9 (the repo leaves d = 0 and d = 1 out), with d
  as abscissa, so their maximum is 0.8. **AUPR**: the area under precision against recall
  (points sorted by recall). These are on the scale of seed Table 1 (AUP 0.2–0.4).
- **AUC** (same file): trapezoidal area under the accuracy curve in *percent* over all 11
  levels with spacing 0.1, so it lies in [0, 100] (seed Table 1: 62–95; lower = faster drop).
  The repo stops masking once accuracy reaches 0 and records 0 for the remaining levels; here
  every level is evaluated.
- **Random baseline** (seed §4.3, ``Scripts/createMasks.py``): the saliency values permuted,
  which gives an arbitrary ranking; the permuted values are also the weights. The repo
  shuffles the feature axis with one permutation for all samples and times; here every
  sample's F·T values are permuted independently (:func:`permute_saliency`).
- **Time / feature level** (seed §4.3, ``Scripts/getFeatureTimePrecisionRecall.py``): a time
  step is masked if any of its cells is masked and informative if any of its cells is; its
  weight is the mean of its K largest rescaled saliencies, K the number of informative cells
  a time step of the box has (the box's feature extent); features likewise. (The repo takes
  K from the other box dimension — the same for square boxes; for the rare sets this follows
  the evident intent.)

Everything runs on the model's device (the first parameter's, else the input's), batched:
the masked inputs of all (level, sample) pairs go through the model ``batch_size`` at a time;
precision and recall come from cumulative sums along the saliency order, without a loop over
samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

#: seed 004's levels d = [0, 10, …, 100] %, as fractions of the total saliency
D_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
_SHARE_TOL = 1e-9  # cumulative shares within this of d count as reaching it (float64 sums)

Background = Tensor | np.ndarray | Callable[[int, int], object]


@dataclass
class PrecisionRecall:
    """Weighted precision and recall per level (nan where undefined, e.g. nothing masked at d = 0)
    and their areas (see the module docstring)."""

    precision: Tensor  # (D,)
    recall: Tensor  # (D,)
    aup: float
    aur: float
    aupr: float


@dataclass
class MaskingResult:
    """What masking the salient cells did, per level of ``fractions``.

    accuracy: (D,) percent of samples still classified correctly; masked_share: (D,) mean fraction
    of cells masked; cells / time / features: precision and recall of masked cells, time steps
    and features (the latter two ``None`` unless asked for).
    """

    fractions: Tensor
    accuracy: Tensor
    masked_share: Tensor
    auc: float
    cells: PrecisionRecall
    time: PrecisionRecall | None = None
    features: PrecisionRecall | None = None

    @property
    def aup(self) -> float:
        return self.cells.aup

    @property
    def aur(self) -> float:
        return self.cells.aur

    @property
    def aupr(self) -> float:
        return self.cells.aupr

    def summary(self) -> dict[str, float]:
        """The scalar metrics, named as in seed Table 1 (plus time_/feature_ ones if computed)."""
        out = {"AUPR": self.aupr, "AUP": self.aup, "AUR": self.aur, "AUC": self.auc}
        for prefix, level in (("time_", self.time), ("feature_", self.features)):
            if level is not None:
                out |= {f"{prefix}AUPR": level.aupr, f"{prefix}AUP": level.aup, f"{prefix}AUR": level.aur}
        return out


# ---------------------------------------------------------------------------------------------
# building blocks


def rescale_saliency(saliency: Tensor) -> Tensor:
    """``|saliency|`` min-max scaled to [0, 1] per sample over all its cells (0 for a constant map)."""
    s = saliency.abs().flatten(1)
    low, high = s.amin(1, keepdim=True), s.amax(1, keepdim=True)
    span = high - low
    scaled = torch.where(span > 0, (s - low) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(s))
    return scaled.view_as(saliency)


def permute_saliency(saliency: Tensor, seed: int = 0) -> Tensor:
    """The random baseline: every sample's saliency values shuffled over its cells (seeded)."""
    flat = saliency.flatten(1)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    order = torch.rand(flat.shape, generator=generator).argsort(1).to(flat.device)
    return flat.gather(1, order).view_as(saliency)


def _fractions(fractions: Sequence[float]) -> Tensor:
    d = torch.as_tensor(list(fractions), dtype=torch.float64)
    if d.ndim != 1 or len(d) < 1 or (d < 0).any() or (d > 1).any() or (d.diff() <= 0).any():
        raise ValueError(f"fractions must increase strictly within [0, 1], got {list(fractions)}")
    return d


def saliency_order(weights: Tensor, seed: int = 0) -> Tensor:
    """(n, C) cell indices by decreasing weight, ties in random (seeded) order."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    shuffle = torch.rand(weights.shape, generator=generator).argsort(1).to(weights.device)
    by_weight = weights.gather(1, shuffle).argsort(dim=1, descending=True, stable=True)
    return shuffle.gather(1, by_weight)


def _ranks(order: Tensor) -> Tensor:
    """(n, C) position of every cell in ``order`` (the inverse permutation)."""
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def cells_per_level(sorted_weights: Tensor, fractions: Tensor) -> Tensor:
    """(D, n) number of top cells masked at each level: the smallest k ≥ 1 whose cumulative share
    of the total reaches d (0 at d = 0, all at d = 1); a zero map counts as uniform."""
    w = sorted_weights.double()
    total = w.sum(1, keepdim=True)
    w = torch.where(total > 0, w, torch.ones_like(w))
    share = w.cumsum(1) / w.sum(1, keepdim=True)  # (n, C), non-decreasing
    d = fractions.to(w.device)
    targets = (d - _SHARE_TOL).expand(len(w), -1).contiguous()  # (n, D)
    below = torch.searchsorted(share, targets).T  # (D, n): cells whose cumulative share is < d
    cells = sorted_weights.shape[1]
    k = (below + 1).clamp(max=cells)
    k = torch.where(d[:, None] <= 0, torch.zeros_like(k), k)
    return torch.where(d[:, None] >= 1, torch.full_like(k, cells), k)


def top_share_masks(saliency: Tensor, fractions: Sequence[float] = D_GRID, seed: int = 0) -> Tensor:
    """(D, n, F, T) bool: the cells masked at each level for ``saliency`` (rescaled first, as the metrics do)."""
    weights = rescale_saliency(saliency.double()).flatten(1)
    order = saliency_order(weights, seed)
    k = cells_per_level(weights.gather(1, order), _fractions(fractions))
    return (_ranks(order)[None] < k[:, :, None]).view(len(k), *saliency.shape)


def _areas(fractions: Tensor, precision: Tensor, recall: Tensor) -> PrecisionRecall:
    inner = (fractions > 0) & (fractions < 1)
    d, p, r = fractions[inner], precision[inner], recall[inner]
    aup = float(torch.trapezoid(p, d)) if len(d) > 1 else float("nan")
    aur = float(torch.trapezoid(r, d)) if len(d) > 1 else float("nan")
    by_recall = r.argsort(stable=True)
    aupr = float(torch.trapezoid(p[by_recall], r[by_recall])) if len(d) > 1 else float("nan")
    return PrecisionRecall(precision.float().cpu(), recall.float().cpu(), aup, aur, aupr)


def _mean_where(values: Tensor, valid: Tensor) -> Tensor:
    """Mean over the last axis of ``values`` where ``valid`` (nan if none is)."""
    count = valid.sum(-1)
    total = torch.where(valid, values, torch.zeros_like(values)).sum(-1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def _weighted_scores(tp: Tensor, fp: Tensor, fn: Tensor) -> tuple[Tensor, Tensor]:
    """Per-level precision and recall averaged over samples with a positive denominator; inputs (D, n)."""
    precision = _mean_where(tp / torch.where(tp + fp > 0, tp + fp, torch.ones_like(tp)), tp + fp > 0)
    recall = _mean_where(tp / torch.where(tp + fn > 0, tp + fn, torch.ones_like(tp)), tp + fn > 0)
    return precision, recall


def cell_precision_recall(sorted_weights: Tensor, sorted_informative: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted precision and recall (D,) of the top-``k`` cells, from the saliency-sorted weights
    and informative flags (n, C): cumulative sums along the order give TP and FP at every k."""
    w = sorted_weights.double()
    hit = sorted_informative.to(w.dtype)
    zero = torch.zeros(len(w), 1, dtype=w.dtype, device=w.device)
    tp_cum = torch.cat([zero, (w * hit).cumsum(1)], 1)  # TP when the first j cells are masked
    fp_cum = torch.cat([zero, (w * (1 - hit)).cumsum(1)], 1)
    index = k.T.to(w.device)  # (n, D)
    tp, fp = tp_cum.gather(1, index).T, fp_cum.gather(1, index).T  # (D, n)
    fn = tp_cum[:, -1][None] - tp
    return _weighted_scores(tp, fp, fn)


def _axis_weights(weights: Tensor, informative: Tensor, axis: int) -> Tensor:
    """Mean of the K largest weights of each time step (axis=1 reduces features) or feature
    (axis=2 reduces time steps), K the box's extent along the reduced axis (per sample)."""
    extent = informative.sum(axis).amax(1).clamp(min=1)  # (n,)
    ordered = weights.sort(axis, descending=True).values.cumsum(axis)  # (n, F, T)
    ordered = ordered.movedim(axis, -1)  # (n, other, reduced)
    index = (extent - 1).view(-1, 1, 1).expand(-1, ordered.shape[1], 1)
    return ordered.gather(-1, index)[..., 0] / extent[:, None].to(weights.dtype)


def axis_precision_recall(weights: Tensor, informative: Tensor, masks: Tensor, axis: int) -> tuple[Tensor, Tensor]:
    """Time (axis=1: features collapsed) or feature (axis=2) level weighted precision and recall (D,)."""
    w = _axis_weights(weights.double(), informative, axis)  # (n, L)
    truth = informative.any(axis)  # (n, L)
    chosen = masks.any(axis + 1)  # (D, n, L)
    tp = (w * (chosen & truth)).sum(-1)
    fp = (w * (chosen & ~truth)).sum(-1)
    fn = (w * (~chosen & truth)).sum(-1)
    return _weighted_scores(tp, fp, fn)


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return fallback


def _background(background: Background, x: Tensor, seed: int) -> Tensor:
    if callable(background) and not isinstance(background, (Tensor, np.ndarray)):
        background = background(x.shape[0], seed)
    values = torch.as_tensor(background)
    if values.shape != x.shape:
        raise ValueError(f"background must have the inputs' shape {tuple(x.shape)}, got {tuple(values.shape)}")
    return values.to(device=x.device, dtype=x.dtype)


def masked_accuracy(model: nn.Module, x: Tensor, y: Tensor, order: Tensor, k: Tensor, background: Tensor,
                    batch_size: int = 512) -> Tensor:
    """(D,) percent correct after replacing, per level, the top-``k`` cells of ``order`` by ``background``."""
    n = order.shape[0]
    rank = _ranks(order)
    levels = k.shape[0]
    correct = torch.zeros(levels * n, dtype=torch.bool, device=x.device)
    level_of = torch.arange(levels, device=x.device).repeat_interleave(n)
    sample_of = torch.arange(n, device=x.device).repeat(levels)
    flat_x, flat_bg = x.flatten(1), background.flatten(1)
    for start in range(0, levels * n, batch_size):
        lv, sm = level_of[start:start + batch_size], sample_of[start:start + batch_size]
        mask = rank[sm] < k[lv, sm][:, None]
        inputs = torch.where(mask, flat_bg[sm], flat_x[sm]).view(len(sm), *x.shape[1:])
        correct[start:start + batch_size] = model(inputs).argmax(1) == y[sm]
    return correct.view(levels, n).double().mean(1) * 100


def evaluate_saliency(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    saliency: Tensor,
    informative: Tensor,
    background: Background,
    fractions: Sequence[float] = D_GRID,
    *,
    seed: int = 0,
    batch_size: int = 512,
    time_and_features: bool = False,
) -> MaskingResult:
    """Seed 004's masking evaluation of ``saliency`` (n, F, T) for ``model`` on ``x`` (n, F, T), labels ``y``.

    ``informative``: (n, F, T) bool, the known informative cells. ``background``: replacement
    values (n, F, T), or a sampler ``background(n, seed) -> (n, F, T)`` (such as
    ``TimeSeriesSet.background_sampler``), called once with ``seed``. ``seed`` also breaks ties
    in the saliency order. ``time_and_features`` adds the time- and feature-level precision and
    recall. The model is run in eval mode under ``no_grad`` (its mode is restored).
    """
    x = torch.as_tensor(x)
    if x.ndim != 3 or not x.is_floating_point():
        raise ValueError(f"x must be a floating (n, F, T) tensor, got {x.dtype} {tuple(x.shape)}")
    device = _model_device(model, x.device)
    x = x.to(device)
    y = torch.as_tensor(y, device=device).long()
    saliency = torch.as_tensor(saliency, device=device)
    informative = torch.as_tensor(informative, device=device).bool()
    for name, value in (("saliency", saliency), ("informative", informative)):
        if value.shape != x.shape:
            raise ValueError(f"{name} must have the inputs' shape {tuple(x.shape)}, got {tuple(value.shape)}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    d = _fractions(fractions)
    replacement = _background(background, x, seed)

    weights = rescale_saliency(saliency.detach().double()).flatten(1)  # float64: shares compared to d exactly
    order = saliency_order(weights, seed)
    sorted_weights = weights.gather(1, order)
    k = cells_per_level(sorted_weights, d)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            accuracy = masked_accuracy(model, x, y, order, k, replacement, batch_size)
    finally:
        model.train(was_training)

    precision, recall = cell_precision_recall(sorted_weights, informative.flatten(1).gather(1, order), k)
    d_device = d.to(device)
    result = MaskingResult(
        fractions=d.float(),
        accuracy=accuracy.float().cpu(),
        masked_share=(k.double() / order.shape[1]).mean(1).float().cpu(),
        auc=float(torch.trapezoid(accuracy, d_device)),
        cells=_areas(d_device, precision, recall),
    )
    if time_and_features:
        masks = (_ranks(order)[None] < k[:, :, None]).view(len(d), *x.shape)
        grid = weights.view(x.shape)
        result.time = _areas(d_device, *axis_precision_recall(grid, informative, masks, axis=1))
        result.features = _areas(d_device, *axis_precision_recall(grid, informative, masks, axis=2))
    return result


def random_baseline(model: nn.Module, x: Tensor, y: Tensor, saliency: Tensor, informative: Tensor,
                    background: Background, fractions: Sequence[float] = D_GRID, *, seed: int = 0,
                    **options) -> MaskingResult:
    """:func:`evaluate_saliency` of ``saliency`` permuted per sample (seed 004's random baseline)."""
    return evaluate_saliency(model, x, y, permute_saliency(torch.as_tensor(saliency), seed), informative,
                             background, fractions, seed=seed, **options)
