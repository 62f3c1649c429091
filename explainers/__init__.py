"""Explainers: per-sample attributions of a classifier's target logit.

Every explainer is built from a model and called as ``explainer(x, target) -> tensor like x``
with ``x`` (B, ...) on the model's (or any) device and ``target`` (B,) class indices. The
user's model is never modified: explainers work on a private frozen copy.

``explainer.explain(x, target)`` returns an :class:`Explanation` (relevance, logits, explained
class); ``target`` may be ``"predicted"``. LRP and the gradients get the logits from the
explanation's own forward pass (:mod:`.explanation`).
"""

from .errors import UnsupportedModelError
from .explanation import PREDICTED, Explanation
from .gradient import Gradient, GradientTimesInput, SmoothGrad
from .integrated_gradients import IntegratedGradients
from .lrp import LRP
from .occlusion import Occlusion

__all__ = [
    "LRP",
    "Gradient",
    "GradientTimesInput",
    "SmoothGrad",
    "IntegratedGradients",
    "Occlusion",
    "UnsupportedModelError",
    "Explanation",
    "PREDICTED",
]
