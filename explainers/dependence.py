"""Which tensors of a call depend on the explained input: those that require a gradient.

The LRP copy of a model is frozen (its parameters do not require gradients) and the explained
input does, so ``requires_grad`` marks exactly the input-dependent values: what the data flow
records (:mod:`.dataflow`) and what the AttnLRP rules count (:mod:`.attention_rules`).
"""
from __future__ import annotations

from torch import Tensor


def dependent(value: object) -> list[Tensor]:
    """Tensors in ``value`` (nested tuples, lists, dicts) that depend on the input."""
    if isinstance(value, Tensor):
        return [value] if value.requires_grad else []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [tensor for item in value for tensor in dependent(item)]
    return []
