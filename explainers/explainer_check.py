"""Can an audit trust its heatmaps? The configured explainer against a random ordering and the gradient.

Two checks, on the same samples (seed 003 Algorithm 3; seed 002 / Adebayo et al. 2018):

1. **Region perturbation** (:mod:`.faithfulness`): MoRF and LeRF curves of the explainer, MoRF curves of
   the plain input gradient and of a random ordering of the regions. The explainer
   must remove evidence faster than chance: the paired bootstrap 95% interval of
   ``AOPC(explainer) − AOPC(random)`` (per sample, logits) must lie above 0.
2. **Cascading parameter randomization** (:mod:`.randomization`): the explainer's heatmaps of the
   trained model against those of models re-initialized from the output down. Once every layer
   is random the heatmaps must have changed: the median Spearman correlation of the fully
   randomized model's absolute heatmaps with the trained model's must stay below
   ``similarity_limit`` (a heatmap of the input alone scores 1.0; on the embedded digits LRP
   scores 0.41, the gradient 0.20 and gradient × input 0.86, which Adebayo et al. found to fail).

:func:`check_explainer` computes the per-sample results of one block of samples (a Dask task
each); :func:`verdict` pools the blocks into the summary and the warnings.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .faithfulness import pixel_flipping
from .randomization import parameter_randomization, randomizable_layers

CURVES = ("explainer_morf", "explainer_lerf", "gradient_morf", "random_morf")
BOOTSTRAP = 2000


@dataclass(frozen=True)
class CheckSettings:
    """How the heatmaps are judged. region: side of a perturbed square (pixels); steps: perturbation
    steps until every region is replaced; replacement: see :mod:`.faithfulness`."""

    region: int = 4
    steps: int = 8
    replacement: str = "blur"
    randomization: bool = True
    similarity_limit: float = 0.8
    seed: int = 0
    batch_size: int = 256


Explain = Callable[[nn.Module, Tensor, Tensor], Tensor]  # (model, x, target) -> relevance (B, *spatial)


def check_explainer(model: nn.Module, explain: Explain, gradient: Explain, x: Tensor, target: Tensor,
                    settings: CheckSettings, block: int = 0) -> dict:
    """Per-sample results for ``x`` (B, C, *spatial) and ``target`` (B,): curves (numpy (B, L+1) per name in
    :data:`CURVES`, logits and probabilities), the fraction removed at each point, and the randomization
    similarities (steps, B) of the explainer and the gradient with the layer names. ``block`` seeds the random
    ordering (different blocks, different orderings)."""
    spatial = x.ndim - 2
    grid = [-(-s // settings.region) for s in x.shape[-spatial:]]
    regions = int(np.prod(grid))
    per_step = max(1, -(-regions // settings.steps))
    relevance = {"explainer": explain(model, x, target).detach(), "gradient": gradient(model, x, target).detach()}
    generator = torch.Generator(device=x.device).manual_seed(settings.seed * 100_003 + block)
    options = dict(region=settings.region, regions_per_step=per_step, replacement=settings.replacement,
                   batch_size=settings.batch_size)
    last = -(-regions // per_step)
    if last < 2:
        raise ValueError(f"faithfulness: {regions} region(s) of {settings.region} px in {settings.steps} step(s) leave "
                         "no step between the clean and the fully replaced input; use a smaller region or more steps")
    # the unperturbed and the fully replaced input are the same for every order: evaluated once
    ends = pixel_flipping(model, x, target, relevance["explainer"], points=[0, last], **options)
    out: dict = {"logits": {}, "probabilities": {}}
    for name in CURVES:
        source, order = name.split("_")
        scores = relevance["explainer" if source == "random" else source]
        inner = pixel_flipping(model, x, target, scores, order="random" if source == "random" else order,
                               generator=generator, points=torch.arange(1, last), **options)
        for kind in ("logits", "probabilities"):
            edge, middle = getattr(ends, kind), getattr(inner, kind)
            out[kind][name] = torch.cat([edge[:, :1], middle, edge[:, 1:]], 1).cpu().numpy()
        out["removed"] = torch.cat([ends.removed[:1], inner.removed, ends.removed[1:]]).cpu().numpy()
    if settings.randomization and not randomizable_layers(model):
        out["randomization_skipped"] = ("the model has no layer with reset_parameters (e.g. TorchScript): "
                                        "parameter randomization not run")
    elif settings.randomization:
        for name, fn in (("explainer", explain), ("gradient", gradient)):
            result = parameter_randomization(model, fn, x, target, seed=settings.seed + 42, reference=relevance[name])
            out[f"randomization_{name}"] = result.similarity.cpu().numpy()
            out["layers"] = result.layers
    return out


def _aopc(curve: np.ndarray) -> np.ndarray:
    return (curve[:, :1] - curve).mean(1)


def _bootstrap_mean(values: np.ndarray, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(BOOTSTRAP, len(values)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def verdict(blocks: list[dict], method: str, settings: CheckSettings) -> dict:
    """The ``faithfulness`` block of summary.json from :func:`check_explainer`'s blocks: mean curves, AOPC,
    ABPC, the advantage over random with its interval, the randomization curves, warnings and ``trustworthy``."""
    logits = {name: np.concatenate([b["logits"][name] for b in blocks]) for name in CURVES}
    probabilities = {name: np.concatenate([b["probabilities"][name] for b in blocks]) for name in CURVES}
    aopc = {name: _aopc(curve) for name, curve in logits.items()}
    advantage = aopc["explainer_morf"] - aopc["random_morf"]
    low, high = _bootstrap_mean(advantage, settings.seed)
    summary: dict = {
        "method": method, "samples": int(len(advantage)), "settings": settings.__dict__,
        "removed": [round(float(v), 4) for v in blocks[0]["removed"]],
        "mean_curves": {"logit": {k: _rounded(v.mean(0)) for k, v in logits.items()},
                        "probability": {k: _rounded(v.mean(0)) for k, v in probabilities.items()}},
        "aopc": {"explainer": float(aopc["explainer_morf"].mean()), "gradient": float(aopc["gradient_morf"].mean()),
                 "random": float(aopc["random_morf"].mean())},
        "abpc": {"explainer": float((logits["explainer_lerf"] - logits["explainer_morf"]).mean())},
        "advantage_over_random": {"mean": float(advantage.mean()), "ci95": [low, high]},
        "better_than_random": bool(low > 0),
    }
    warnings = []
    if not np.isfinite([low, high]).all():
        summary["advantage_over_random"] = {"mean": None, "ci95": [None, None]}
        summary["better_than_random"] = False
        warnings.append(f"the region-perturbation curves of the {method} heatmaps are not finite (NaN or Inf outputs)")
    elif low <= 0:
        warnings.append(
            f"the {method} heatmaps locate evidence no better than a random ordering (AOPC {aopc['explainer_morf'].mean():.3f} "
            f"vs random {aopc['random_morf'].mean():.3f}; 95% interval of the difference [{low:.3f}, {high:.3f}] "
            "includes 0)")
    if "randomization_explainer" in blocks[0]:
        similarity = {name: np.concatenate([b[f"randomization_{name}"] for b in blocks], axis=1)
                      for name in ("explainer", "gradient")}
        curves = {name: _rounded(np.nanmedian(s, axis=1)) for name, s in similarity.items()}
        final = curves["explainer"][-1]
        if not np.isfinite(final):  # constant heatmaps have no rank correlation
            curves = {k: [v if np.isfinite(v) else None for v in c] for k, c in curves.items()}
            summary["randomization"] = {"layers": blocks[0]["layers"], "median": curves, "final": None,
                                        "limit": settings.similarity_limit, "passed": False}
            warnings.append(f"the {method} heatmaps are constant (no rank correlation can be computed)")
        else:
            summary["randomization"] = {"layers": blocks[0]["layers"], "order": "top_down",
                                        "similarity": "spearman_abs", "median": curves, "final": final,
                                        "limit": settings.similarity_limit,
                                        "passed": bool(final < settings.similarity_limit)}
            if final >= settings.similarity_limit:
                warnings.append(
                    f"the {method} heatmaps stay near-identical when every layer of the model is re-initialized "
                    f"(median Spearman {final:.2f} >= {settings.similarity_limit}): they describe the input, not "
                    "the model")
    if "randomization_skipped" in blocks[0]:
        summary["randomization_skipped"] = blocks[0]["randomization_skipped"]
    summary["warnings"] = warnings
    summary["trustworthy"] = not warnings
    return summary


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 5) for v in values]
