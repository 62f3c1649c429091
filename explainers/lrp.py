"""Layer-wise Relevance Propagation with one forward and one backward pass.

The model is rewritten once, at construction, into a private "LRP-ized" copy: BatchNorms are
folded into the preceding affine layer (:mod:`.canonizers`) and every layer is replaced by the
module of its rule (:mod:`.composites`, :mod:`.rules`). An explanation is then an ordinary
autograd backward pass of the target logit through that copy (seed 003, Appendix B,
Algorithm 8): relevance ``R = x ⊙ ∇̂f(x)``, or ``∇̂f(x)`` itself when the first layer's rule
(Flat, z^B) already produces it. The output relevance is the explained logit
(``one_hot(target) ⊙ logits``), so for a bias-free ReLU network ``Σ R = f_target(x)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .canonizers import fold_batch_norms
from .composites import COMPOSITES, make_composite
from .snapshot import DeviceCopies, frozen_copy
from .support import check_supported
from .target import check_inputs, target_scores


def _lrp_copy(model: nn.Module, composite_name: str, options: dict[str, object]) -> tuple[nn.Module, bool]:
    """The LRP-ized private copy of ``model`` and whether its input gradient is the relevance."""
    composite = make_composite(composite_name, **options)
    check_supported(model)
    lrp_model = nn.Sequential(frozen_copy(model))  # a container, so the root can be replaced too
    fold_batch_norms(lrp_model)
    first = composite.apply(lrp_model)
    return lrp_model, bool(getattr(first, "yields_relevance", False))


class LRP:
    """LRP explainer: ``LRP(model, composite)(x, target) -> relevance`` shaped like ``x``.

    Parameters
    ----------
    model:
        The classifier, output (B, classes). It is deep-copied (never modified); explanations
        describe the model as it was at construction, in eval mode.
    composite:
        ``"epsilon_plus_flat"`` (default), ``"epsilon_gamma_box"`` (needs ``low``/``high``, the
        input bounds, floats or tensors broadcastable to one sample) or
        ``"epsilon_alpha2_beta1_flat"``; see :mod:`explainers.composites`.
    epsilon:
        ε of the ε rule (nn.Linear layers).
    stabilizer:
        ε used only to stabilise the denominators of the other rules.
    zero_bias:
        Ignore biases in the rules' denominators (relevance is then conserved layer by layer).
    low, high, gamma:
        Input bounds of z^B and γ of the γ rule (``epsilon_gamma_box`` only).

    Raises
    ------
    UnsupportedModelError
        At construction, if the model has modules without an LRP rule (listed with their paths).
    """

    def __init__(
        self,
        model: nn.Module,
        composite: str = "epsilon_plus_flat",
        *,
        epsilon: float = 1e-6,
        stabilizer: float = 1e-6,
        zero_bias: bool = False,
        low: float | Tensor | None = None,
        high: float | Tensor | None = None,
        gamma: float = 0.25,
    ) -> None:
        if composite not in COMPOSITES:
            raise ValueError(f"composite={composite!r} is not one of {sorted(COMPOSITES)}")
        options: dict[str, object] = {"epsilon": epsilon, "stabilizer": stabilizer, "zero_bias": zero_bias}
        if composite == "epsilon_gamma_box":
            if low is None or high is None:
                raise ValueError("composite='epsilon_gamma_box' needs the input bounds low= and high=")
            options.update(low=low, high=high, gamma=gamma)
        elif low is not None or high is not None:
            raise ValueError(f"low/high only apply to composite='epsilon_gamma_box', not {composite!r}")
        self.composite = composite
        lrp_model, self._yields_relevance = _lrp_copy(model, composite, options)
        self._copies = DeviceCopies(lrp_model)

    def __call__(self, x: Tensor, target: Tensor) -> Tensor:
        """Relevance of every input element for ``logits[b, target[b]]``; same shape, dtype, device as ``x``."""
        target = check_inputs(x, target)
        model = self._copies.get(x)
        with torch.inference_mode(False), torch.enable_grad():
            x_in = (x.clone() if x.is_inference() else x).detach().requires_grad_(True)
            score = target_scores(model(x_in), target).sum()
            (grad,) = torch.autograd.grad(score, x_in, allow_unused=True, materialize_grads=True)
        return grad if self._yields_relevance else x_in.detach() * grad
