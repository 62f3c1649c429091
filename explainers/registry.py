"""The explainers by name: the one list the config, the CLI and the pipeline derive from.

Importing this module is cheap (no torch): the CLI reads the names for ``--help``. The class
behind a name is imported when an explainer is built.
"""
from __future__ import annotations

import importlib
from typing import Any

#: method name -> (module of this package, class name, one-line description)
EXPLAINERS: dict[str, tuple[str, str, str]] = {
    "lrp": ("lrp", "LRP", "layer-wise relevance propagation with a composite of rules (default)"),
    "gradient": ("gradient", "Gradient", "the input gradient (saliency)"),
    "gradient_x_input": ("gradient", "GradientTimesInput", "gradient times input"),
    "smoothgrad": ("gradient", "SmoothGrad", "gradients averaged over noisy copies of the input"),
    "integrated_gradients": ("integrated_gradients", "IntegratedGradients", "integrated gradients from a zero baseline"),
    "occlusion": ("occlusion", "Occlusion", "change of the target logit when patches are occluded"),
}

#: LRP composites by name (built by :func:`unhans.explainers.composites.make_composite`)
COMPOSITES: tuple[str, ...] = ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat", "epsilon")

METHODS: tuple[str, ...] = tuple(EXPLAINERS)


def explainer_class(method: str) -> type:
    """The class registered as ``method``; ValueError naming the choices otherwise."""
    if method not in EXPLAINERS:
        raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
    module, name, _ = EXPLAINERS[method]
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


def make_explainer(model: Any, method: str, **options: Any):
    """Build the explainer ``method`` for ``model`` with its keyword ``options`` (e.g. ``composite=`` for LRP)."""
    return explainer_class(method)(model, **options)
