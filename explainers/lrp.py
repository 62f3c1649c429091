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

import threading

import torch
from torch import Tensor, nn

from . import rules
from .canonizers import fold_batch_norms
from .composites import COMPOSITES, make_composite
from .probe import probe
from .snapshot import DeviceCopies, frozen_copy
from .support import KNOWN_LAYERS, check_supported
from .target import check_inputs, target_scores

_TRUSTED = KNOWN_LAYERS + (rules.AffineRule, rules.Pass, rules.Norm)  # forwards the probe trusts


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
        Leave biases out of the rules' modified forwards ``z`` (zennit ``zero_params="bias"``): a
        layer then passes on all relevance it receives, except at outputs whose ``z`` is 0.
    low, high, gamma:
        Input bounds of z^B and γ of the γ rule (``epsilon_gamma_box`` only).

    Raises
    ------
    UnsupportedModelError
        At construction, if the model has modules without an LRP rule (listed with their paths);
        at the first call, if its forward code applies operations without an LRP rule
        (see :mod:`explainers.probe`).
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
        rule_map = make_composite(composite, **options)
        check_supported(model)
        lrp_model = nn.Sequential(frozen_copy(model))  # a container, so the root can be replaced too
        with torch.inference_mode(False):
            self._folded = fold_batch_norms(lrp_model)
        with torch.inference_mode(False), torch.no_grad():  # rules precompute modified weights
            first = rule_map.apply(lrp_model)
        self.composite = composite
        self._yields_relevance = bool(getattr(first, "yields_relevance", False))
        self._copies = DeviceCopies(lrp_model)
        self._probed = False
        self._probe_lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "_probe_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._probe_lock = threading.Lock()

    def _check_forward_code(self, model: nn.Module, x: Tensor) -> None:
        """Once: run the probe (see :mod:`.probe`) on the first sample the explainer sees."""
        if self._probed or x.shape[0] == 0:
            return
        with self._probe_lock:
            if not self._probed:
                probe(model, x, _TRUSTED, self._folded)
                self._probed = True

    def __call__(self, x: Tensor, target: Tensor) -> Tensor:
        """Relevance of every input element for ``logits[b, target[b]]``; same shape, dtype, device as ``x``."""
        target = check_inputs(x, target)
        model = self._copies.get(x)
        self._check_forward_code(model, x)
        with torch.inference_mode(False), torch.enable_grad():
            x_in = (x.clone() if x.is_inference() else x).detach().requires_grad_(True)
            score = target_scores(model(x_in), target).sum()
            (grad,) = torch.autograd.grad(score, x_in, allow_unused=True, materialize_grads=True)
        return grad if self._yields_relevance else x_in.detach() * grad
