"""Canonizers: rewrite a (private) model copy into an equivalent form that LRP rules explain well.

BatchNorm folding (Montavon et al., 2019; zennit ``SequentialMergeBatchNorm``): an eval-mode
BatchNorm ``y = γ (z − μ)/√(σ² + ε_bn) + β`` that reads the output ``z = Wx + b`` of an affine
layer (and is its only reader) is merged into it, ``W' = s ⊙ W``, ``b' = s ⊙ (b − μ) + β`` with
``s = γ/√(σ² + ε_bn)`` (per output channel), and the BatchNorm becomes the identity, so the
affine layer's rule sees the whole affine map. Which BatchNorm follows which layer is read from
the data flow (:mod:`.dataflow`), not from registration order as in zennit. Only ever applied
to the explainer's own copy.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def _fold(layer: nn.Module, norm: nn.Module) -> None:
    scale = (norm.running_var + norm.eps).rsqrt()
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    weight = layer.weight * scale.reshape(-1, *([1] * (layer.weight.ndim - 1)))
    bias = shift if layer.bias is None else layer.bias * scale + shift
    layer.weight = nn.Parameter(weight, requires_grad=False)
    layer.bias = nn.Parameter(bias, requires_grad=False)


def fold_batch_norms(model: nn.Module, pairs: list[tuple[nn.Module, nn.Module]]) -> None:
    """Merge every ``(layer, batch_norm)`` pair into ``layer``, in place; the BatchNorms become ``nn.Identity``."""
    folded = {id(norm) for _, norm in pairs}
    for layer, norm in pairs:
        _fold(layer, norm)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in folded:
                setattr(parent, name, nn.Identity())
