"""An explanation together with the output it explains, from one forward pass where possible.

``explainer(x, target)`` returns the relevance only. A pipeline usually needs the logits too
(prediction, top-k, the explained logit for conservation checks) and often explains the
predicted class, which is only known after a forward pass. ``explainer.explain(x, target)``
returns both: ``target`` may be ``"predicted"``, and for LRP and the input gradient the logits
come from the forward pass of the explanation itself, so nothing is computed twice. The other
explainers run one extra forward pass of their frozen copy.

The logits are those of the explainer's private copy of the model. For LRP that copy has its
BatchNorms folded into the adjacent layers, so the logits equal the model's up to float
rounding (relative differences around 1e-7).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from .target import check_inputs, check_logits

#: ``target`` value meaning "the class with the highest logit", decided in the same forward pass
PREDICTED = "predicted"


class Explanation(NamedTuple):
    """Relevance shaped like ``x``, the logits ``(B, classes)`` (detached) and the explained class ``(B,)``."""

    relevance: Tensor
    logits: Tensor
    target: Tensor


def check_target(x: Tensor, target: Tensor | str) -> Tensor | None:
    """``None`` for :data:`PREDICTED`, else the validated target tensor (see :func:`.target.check_inputs`)."""
    if isinstance(target, str):
        if target != PREDICTED:
            raise ValueError(f"target must be a tensor of class indices or {PREDICTED!r}, got {target!r}")
        check_inputs(x, torch.zeros(x.shape[:1], dtype=torch.long, device=x.device))
        return None
    return check_inputs(x, target)


def resolve_target(logits: Tensor, target: Tensor | None) -> Tensor:
    """``target``, or the predicted class (``argmax`` of ``logits``) when it is ``None``."""
    check_logits(logits)
    return logits.detach().argmax(1) if target is None else target


def explain_after_forward(
    explain: Callable[[Tensor, Tensor], Tensor], model: nn.Module, x: Tensor, target: Tensor | str
) -> Explanation:
    """The generic :class:`Explanation`: a no-grad forward of ``model`` for the logits, then ``explain``."""
    wanted = check_target(x, target)
    with torch.no_grad():
        logits = model(x)
    chosen = resolve_target(logits, wanted)
    return Explanation(explain(x, chosen), logits.detach(), chosen)
