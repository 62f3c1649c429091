"""Composites: which LRP rule explains which layer (Montavon et al., 2019; Kohlbrenner et al., 2020).

A composite maps every layer of the model to a rule from :mod:`explainers.rules`. All built-in
composites share the base map of zennit: average pooling → Norm, element-wise activations and
BatchNorms not folded by a canonizer → Pass, ReLU, max pooling (winner takes all), Flatten,
Dropout (eval) and Identity → their plain gradient. They differ in the affine layers:

========================== ==================== ============== ===========
name                       first Linear/Conv    convolutions   nn.Linear
========================== ==================== ============== ===========
epsilon_plus_flat          Flat                 z⁺             ε
epsilon_gamma_box          z^B (low, high)      γ              ε
epsilon_alpha2_beta1_flat  Flat                 α2β1           ε
========================== ==================== ============== ===========

The first layer is the first Linear/Conv in module registration order (as in zennit); it must
be the layer that reads the input. (zennit's ``EpsilonGammaBox`` gives z^B to the first
*convolution* only; here the first Linear gets it too.)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from torch import Tensor, nn

from . import rules
from .support import ACTIVATIONS, AFFINE, AVG_POOL, BATCH_NORM

RuleFactory = Callable[[nn.Module], nn.Module]


@dataclass(frozen=True)
class Composite:
    """Rule factories for the first affine layer, the other convolutions and the other nn.Linear layers."""

    first: RuleFactory
    convolution: RuleFactory
    linear: RuleFactory
    stabilizer: float = 1e-6

    def rule(self, module: nn.Module, is_first: bool) -> nn.Module | None:
        """The rule module replacing ``module``, or ``None`` to keep it (plain gradient)."""
        if isinstance(module, AFFINE):
            if is_first:
                return self.first(module)
            return self.linear(module) if isinstance(module, nn.Linear) else self.convolution(module)
        if isinstance(module, AVG_POOL):
            return rules.Norm(module, self.stabilizer)
        if isinstance(module, ACTIVATIONS + BATCH_NORM):
            return rules.Pass(module)
        return None

    def apply(self, model: nn.Module) -> nn.Module | None:
        """Replace, in place, every layer of ``model`` that has a rule by its rule module.

        Returns the rule of the first affine layer (``None`` if there is none). Shared
        modules get one rule; in-place activations are made out-of-place (rule outputs
        must not be overwritten).
        """
        for module in model.modules():
            if getattr(module, "inplace", False) is True:
                module.inplace = False
        replacements: dict[int, nn.Module | None] = {}
        first: nn.Module | None = None
        for path, module in list(model.named_modules(remove_duplicate=False)):
            if not path:
                continue
            if id(module) not in replacements:
                is_first = first is None and isinstance(module, AFFINE)
                replacements[id(module)] = self.rule(module, is_first)
                if is_first:
                    first = replacements[id(module)]
            replacement = replacements[id(module)]
            if replacement is not None:
                parent, _, name = path.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, name, replacement)
        return first


def epsilon_plus_flat(
    epsilon: float = 1e-6, stabilizer: float = 1e-6, zero_bias: bool = False
) -> Composite:
    """Flat on the first layer, z⁺ on convolutions, ε on nn.Linear (zennit ``EpsilonPlusFlat``)."""
    return Composite(
        first=partial(rules.Flat, stabilizer=stabilizer, zero_bias=zero_bias),
        convolution=partial(rules.ZPlus, stabilizer=stabilizer, zero_bias=zero_bias),
        linear=partial(rules.Epsilon, epsilon=epsilon, zero_bias=zero_bias),
        stabilizer=stabilizer,
    )


def epsilon_gamma_box(
    low: float | Tensor,
    high: float | Tensor,
    gamma: float = 0.25,
    epsilon: float = 1e-6,
    stabilizer: float = 1e-6,
    zero_bias: bool = False,
) -> Composite:
    """z^B in ``[low, high]`` on the first layer, γ on convolutions, ε on nn.Linear (zennit ``EpsilonGammaBox``)."""
    return Composite(
        first=partial(rules.ZBox, low=low, high=high, stabilizer=stabilizer, zero_bias=zero_bias),
        convolution=partial(rules.Gamma, gamma=gamma, stabilizer=stabilizer, zero_bias=zero_bias),
        linear=partial(rules.Epsilon, epsilon=epsilon, zero_bias=zero_bias),
        stabilizer=stabilizer,
    )


def epsilon_alpha2_beta1_flat(
    epsilon: float = 1e-6, stabilizer: float = 1e-6, zero_bias: bool = False
) -> Composite:
    """Flat on the first layer, α2β1 on convolutions, ε on nn.Linear (zennit ``EpsilonAlpha2Beta1Flat``)."""
    return Composite(
        first=partial(rules.Flat, stabilizer=stabilizer, zero_bias=zero_bias),
        convolution=partial(rules.AlphaBeta, alpha=2.0, beta=1.0, stabilizer=stabilizer, zero_bias=zero_bias),
        linear=partial(rules.Epsilon, epsilon=epsilon, zero_bias=zero_bias),
        stabilizer=stabilizer,
    )


COMPOSITES: dict[str, Callable[..., Composite]] = {
    "epsilon_plus_flat": epsilon_plus_flat,
    "epsilon_gamma_box": epsilon_gamma_box,
    "epsilon_alpha2_beta1_flat": epsilon_alpha2_beta1_flat,
}


def make_composite(name: str, **options: object) -> Composite:
    """Build the composite registered as ``name`` with its keyword ``options``."""
    if name not in COMPOSITES:
        raise ValueError(f"composite={name!r} is not one of {sorted(COMPOSITES)}")
    return COMPOSITES[name](**options)
