"""Canonizers: rewrite a (private) model copy into an equivalent form that LRP rules explain well.

BatchNorm folding (Montavon et al., 2019; zennit ``SequentialMergeBatchNorm``): an eval-mode
BatchNorm ``y = γ (z − μ)/√(σ² + ε_bn) + β`` directly after an affine layer ``z = Wx + b`` is
merged into it, ``W' = s ⊙ W``, ``b' = s ⊙ (b − μ) + β`` with ``s = γ/√(σ² + ε_bn)`` (per output
channel), and the BatchNorm becomes the identity, so the affine layer's rule sees the whole
affine map. "Directly after" means: the next leaf module in registration order (depth first),
as in zennit — the forward must call children in the order they are registered. Only ever
applied to the explainer's own copy.
"""

from __future__ import annotations

import torch
from torch import nn

from .support import AFFINE, BATCH_NORM


def _out_features(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


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


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def fold_batch_norms(model: nn.Module) -> list[tuple[str, str]]:
    """Merge every BatchNorm that directly follows a Linear/Conv into it, in place.

    Returns the ``(affine_path, batch_norm_path)`` pairs that were merged. BatchNorms that do
    not follow an affine layer are left alone (the composites give them the Pass rule).
    """
    leaves = [(path, m) for path, m in model.named_modules() if next(m.children(), None) is None]
    merged = []
    for (layer_path, layer), (norm_path, norm) in zip(leaves, leaves[1:]):
        if (
            isinstance(layer, AFFINE)
            and isinstance(norm, BATCH_NORM)
            and norm.track_running_stats
            and norm.num_features == _out_features(layer)
        ):
            _fold(layer, norm)
            _set_submodule(model, norm_path, nn.Identity())
            merged.append((layer_path, norm_path))
    return merged
