"""Canonizers: rewrite a (private) model copy into an equivalent form that LRP rules explain well.

BatchNorm folding (Montavon et al., 2019; zennit ``SequentialMergeBatchNorm``): an eval-mode
BatchNorm ``y = γ (z − μ)/√(σ² + ε_bn) + β`` that reads the output ``z = Wx + b`` of an affine
layer (and is its only reader) is merged into it, ``W' = s ⊙ W``, ``b' = s ⊙ (b − μ) + β`` with
``s = γ/√(σ² + ε_bn)`` (per output channel), and the BatchNorm becomes the identity, so the
affine layer's rule sees the whole affine map. Which BatchNorm follows which layer is read from
the data flow (:mod:`.dataflow`), not from registration order as in zennit. Only ever applied
to the explainer's own copy.

Average-pooling folding: an average pooling ``P`` whose output only an ``nn.Linear`` reads
(through flattening) is merged into it, ``W' = W P`` (the pooling's Jacobian, exact), when that
makes the layer smaller — torchvision VGG's ``AdaptiveAvgPool2d((7, 7))`` on inputs below
224×224 replicates a 2×2 map 49/4 times, and the first classifier layer then reads 12× fewer
weights. LRP stays the same: the pooling's Norm rule followed by the layer's ε rule,
``R_i = Σ_j x_i P_ij / z_j · z_j Σ_k W_jk s_k``, equals the ε rule of ``W P`` because ``z_j = (Px)_j``
cancels (up to the 1e-6 stabilizer of ``z_j``). The merged layer only accepts inputs of the
traced shape; :class:`explainers.LRP` prepares one copy per input shape when it merges.
"""

from __future__ import annotations

import torch
from torch import nn


def _replace_by_identity(model: nn.Module, merged: list[nn.Module]) -> None:
    """Replace every occurrence of the ``merged`` modules in ``model`` by ``nn.Identity``."""
    folded = {id(module) for module in merged}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in folded:
                setattr(parent, name, nn.Identity())


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
    for layer, norm in pairs:
        _fold(layer, norm)
    _replace_by_identity(model, [norm for _, norm in pairs])


@torch.no_grad()
def _pooled_weight(pool: nn.Module, weight: torch.Tensor, in_shape: tuple[int, ...], rows: int = 256) -> torch.Tensor:
    """``W P``: each row of ``weight`` pulled back through ``pool`` (its adjoint), in chunks of ``rows``."""
    blocks = []
    for chunk in weight.split(rows):
        with torch.enable_grad():
            probe = torch.zeros((len(chunk), *in_shape), dtype=weight.dtype, device=weight.device, requires_grad=True)
            pooled = pool(probe)
            (pulled,) = torch.autograd.grad(pooled, probe, chunk.reshape(pooled.shape))
        blocks.append(pulled.reshape(len(chunk), -1))
    return torch.cat(blocks)


def fold_average_pools(model: nn.Module, folds: list[tuple[nn.Module, nn.Linear, tuple[int, ...]]]) -> None:
    """Merge every ``(pool, linear, pool input shape)`` into ``linear``, in place; the poolings become ``nn.Identity``."""
    for pool, linear, in_shape in folds:
        weight = _pooled_weight(pool, linear.weight.detach(), tuple(in_shape))
        linear.weight = nn.Parameter(weight, requires_grad=False)
        linear.in_features = weight.shape[1]
    _replace_by_identity(model, [pool for pool, _, _ in folds])
