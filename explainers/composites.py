"""Composites: which LRP rule explains which layer (Montavon et al., 2019; Kohlbrenner et al., 2020).

A composite maps every layer of the model to a rule from :mod:`explainers.rules`. All built-in
composites share the base map of zennit: average pooling → Norm, element-wise activations and
BatchNorms not folded by a canonizer → Pass, max pooling → winner takes all (its gradient,
computed without keeping indices), ReLU, Flatten, Dropout (eval) and Identity → their plain
gradient. They differ in the affine layers:

========================== ==================== ============== ===========
name                       first Linear/Conv    convolutions   nn.Linear
========================== ==================== ============== ===========
epsilon_plus_flat          Flat                 z⁺             ε
epsilon_gamma_box          z^B (low, high)      γ              ε
epsilon_alpha2_beta1_flat  Flat                 α2β1           ε
epsilon                    ε                    ε              ε
========================== ==================== ============== ===========

Attention, LayerNorm/RMSNorm and products of input-dependent tensors get the AttnLRP rules
(:mod:`.attention_rules`) in every composite; ``nn.MultiheadAttention``'s projections get the
composite's nn.Linear rule.

The first layer is the first Linear/Conv to run, read from the data flow (:mod:`.dataflow`);
zennit takes the first in registration order, the same layer in sequential models. (zennit's
``EpsilonGammaBox`` gives z^B to the first *convolution* only; here the first Linear gets it too.)
Sigmoids that gate features (squeeze-excitation) get the Gate rule: a constant weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from torch import Tensor, nn

from . import attention_rules, parameter_free_rules, rules
from .support import ACTIVATIONS, AFFINE, ATTENTION, AVG_POOL, BATCH_NORM, LAYER_NORMS, MAX_POOL, known_layer

RuleFactory = Callable[[nn.Module], nn.Module]


@dataclass(frozen=True)
class Composite:
    """Rule factories for the first affine layer, the other convolutions and the other nn.Linear layers."""

    first: RuleFactory
    convolution: RuleFactory
    linear: RuleFactory
    stabilizer: float = 1e-6

    def rule(self, module: nn.Module, is_first: bool, is_gate: bool = False) -> nn.Module | None:
        """The rule module replacing ``module``, or ``None`` to keep it (plain gradient)."""
        if is_gate:
            return parameter_free_rules.Gate(module)
        if isinstance(module, AFFINE):
            if is_first:
                return self.first(module)
            return self.linear(module) if isinstance(module, nn.Linear) else self.convolution(module)
        if isinstance(module, AVG_POOL):
            return parameter_free_rules.Norm(module, self.stabilizer)
        if isinstance(module, MAX_POOL) and not module.return_indices:
            return parameter_free_rules.WinnerTakesAll(module)
        if isinstance(module, ACTIVATIONS + BATCH_NORM):
            return parameter_free_rules.Pass(module)
        if isinstance(module, LAYER_NORMS) and known_layer(module):  # not a subclass with its own forward
            return attention_rules.LayerNormRule(module)
        if isinstance(module, ATTENTION) and known_layer(module):
            return attention_rules.AttentionRule(module, self.linear)
        return None

    def apply(
        self, model: nn.Module, first: nn.Module | None, gates: list[nn.Module], relu_fed: list[nn.Module] = (),
        also_first: list[nn.Module] = (),
    ) -> nn.Module | None:
        """Replace, in place, every layer of ``model`` that has a rule by its rule module.

        ``first`` is the first layer, ``also_first`` the other layers reading the input (first-layer
        rule too), ``gates`` the gate activations and ``relu_fed`` the affine layers read only by a
        ReLU, all from the data flow (:class:`.dataflow.DataFlow`).
        Returns the first layer's rule (``None`` without affine layers). Shared modules get one
        rule. Modules wrapped by a rule run without gradient inside it, so they are made
        out-of-place (an in-place activation would overwrite the rule's input).
        """
        gate_ids = {id(gate) for gate in gates}
        relu_fed_ids = {id(layer) for layer in relu_fed}
        first_ids = {id(first)} | {id(layer) for layer in also_first}
        replacements: dict[int, nn.Module | None] = {}
        replaced: list[str] = []  # paths of replaced modules: their children belong to the rule now
        for path, module in list(model.named_modules(remove_duplicate=False)):
            if not path or any(path.startswith(f"{done}.") for done in replaced):
                continue
            if id(module) not in replacements:
                replacement = self.rule(module, id(module) in first_ids, id(module) in gate_ids)
                if replacement is not None and getattr(module, "inplace", False) is True:
                    module.inplace = False
                if isinstance(replacement, rules.AffineRule):
                    replacement.relu_fed = id(module) in relu_fed_ids
                replacements[id(module)] = replacement
            replacement = replacements[id(module)]
            if replacement is not None:
                replaced.append(path)
                parent, _, name = path.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, name, replacement)
        return replacements.get(id(first)) if first is not None else None


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


def epsilon(epsilon: float = 1e-6, stabilizer: float = 1e-6, zero_bias: bool = False) -> Composite:
    """ε on every Linear/Conv layer, the first included: with AttnLRP's rules on attention, normalisation and
    activations (:mod:`.attention_rules`) this is plain AttnLRP, the rules of lxt's efficient implementation."""
    rule = partial(rules.Epsilon, epsilon=epsilon, zero_bias=zero_bias)
    return Composite(first=rule, convolution=rule, linear=rule, stabilizer=stabilizer)


COMPOSITES: dict[str, Callable[..., Composite]] = {
    "epsilon_plus_flat": epsilon_plus_flat,
    "epsilon_gamma_box": epsilon_gamma_box,
    "epsilon_alpha2_beta1_flat": epsilon_alpha2_beta1_flat,
    "epsilon": epsilon,
}


def make_composite(name: str, **options: object) -> Composite:
    """Build the composite registered as ``name`` with its keyword ``options``."""
    if name not in COMPOSITES:
        raise ValueError(f"composite={name!r} is not one of {sorted(COMPOSITES)}")
    return COMPOSITES[name](**options)
