"""Explainers: per-sample attributions of a classifier's target logit.

Every explainer is built from a model and called as ``explainer(x, target) -> tensor like x``
with ``x`` (B, ...) on the model's (or any) device and ``target`` (B,) class indices. The
user's model is never modified: explainers work on a private frozen copy.

``explainer.explain(x, target)`` returns an :class:`Explanation` (relevance, logits, explained
class); ``target`` may be ``"predicted"``. LRP and the gradients get the logits from the
explanation's own forward pass (:mod:`.explanation`).

:class:`TemporalSaliencyRescaling` wraps any of them for time series (B, features, time).

Explainers are registered by name in :mod:`.registry` (``make_explainer(model, "lrp")``).
The names below are imported on first use, so ``unhans.explainers.registry`` stays cheap.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "LRP": "lrp", "Gradient": "gradient", "GradientTimesInput": "gradient", "SmoothGrad": "gradient",
    "IntegratedGradients": "integrated_gradients", "Occlusion": "occlusion", "UnsupportedModelError": "errors",
    "Explanation": "explanation", "PREDICTED": "explanation", "make_explainer": "registry",
    "explainer_class": "registry", "METHODS": "registry", "COMPOSITES": "registry",
    "TemporalSaliencyRescaling": "temporal_saliency",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
