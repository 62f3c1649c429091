"""The linear maps of Linear/Conv layers with substituted weights, and their transposes.

Every affine LRP rule evaluates the layer's own map — stride, padding, dilation, groups — with
modified weights (``W⁺``, ``W + γW⁺``, all ones, …) forward, and the transposed map backward,
``v ↦ Wᵀv`` (the input gradient of the layer, without the weight gradient). Convolutions with
zero padding transpose through ``convolution_backward`` with a placeholder input whose shape
and memory layout (channels-last on CPU) match the real one.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Affine = nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d
#: the transposed map ``v ↦ (∂(layer with some weight)/∂x)ᵀ v`` of one weight
Adjoint = Callable[[Tensor], Tensor]


def affine(layer: Affine, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The layer's own linear map (stride, padding, groups, …) with other parameters."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, bias)
    return layer._conv_forward(x, weight, bias)


def memory_format(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def _as(weight: Tensor, v: Tensor) -> Tensor:
    """``weight`` in ``v``'s dtype (autocast forwards leave bf16/fp16 gradients)."""
    return weight if weight.dtype == v.dtype else weight.to(v.dtype)


def adjoint(layer: Affine, weight: Tensor, x: Tensor) -> Adjoint:
    """``v ↦ Wᵀv`` for ``layer`` with ``weight`` (input gradient only), for inputs shaped like ``x``.

    Convolutions with zero padding call ``convolution_backward`` directly with a placeholder
    input (only its shape and layout are read); other padding modes differentiate the map.
    """
    if isinstance(layer, nn.Linear):
        return lambda v: v.matmul(_as(weight, v))
    shape, layout = x.shape, memory_format(x)
    if isinstance(layer.padding, str) or layer.padding_mode != "zeros":

        def differentiated(v: Tensor) -> Tensor:
            with torch.enable_grad():
                probe = torch.zeros(shape, dtype=v.dtype, device=v.device, requires_grad=True)
                z = layer._conv_forward(probe, _as(weight, v), None)
                return torch.autograd.grad(z, probe, v)[0]

        return differentiated
    dims = len(layer.kernel_size)

    def transposed(v: Tensor) -> Tensor:
        placeholder = torch.empty(shape, dtype=v.dtype, device=v.device, memory_format=layout)
        return torch.ops.aten.convolution_backward(
            v, placeholder, _as(weight, v), None, layer.stride, layer.padding, layer.dilation,
            False, [0] * dims, layer.groups, [True, False, False],
        )[0]  # fmt: skip

    return transposed


def channel_dim(layer: Affine) -> int:
    return -1 if isinstance(layer, nn.Linear) else 1


def broadcast(layer: Affine, bias: Tensor, output: Tensor) -> Tensor:
    """``bias`` shaped to add to ``output`` along the channel axis."""
    return bias if isinstance(layer, nn.Linear) else bias.view(-1, *([1] * (output.ndim - 2)))


def ones_affine(layer: Affine, x: Tensor) -> Tensor:
    """``layer`` applied to ``x`` with all weights 1 and no bias (the Flat rule's map), cheaply.

    With unit weights every output channel is the same box-sum of the input-channel sum, so we
    convolve a single channel and expand (groups > 1 falls back to the full convolution).
    """
    if isinstance(layer, nn.Linear):
        return x.sum(-1, keepdim=True).expand(*x.shape[:-1], layer.out_features)
    if layer.groups == 1:
        ones = x.new_ones((1, 1, *layer.kernel_size))
        z = layer._conv_forward(x.sum(1, keepdim=True), ones, None)
        return z.expand(z.shape[0], layer.out_channels, *z.shape[2:])
    return layer._conv_forward(x, x.new_ones(layer.weight.shape), None)


def ones_adjoint(layer: Affine, x: Tensor) -> Adjoint:
    """Transpose of :func:`ones_affine`: sum over output channels, one single-channel transposed pass."""
    if isinstance(layer, nn.Linear):
        return lambda v: v.sum(-1, keepdim=True).expand(x.shape)
    if layer.groups != 1:
        return adjoint(layer, x.new_ones(layer.weight.shape), x)
    single = adjoint(layer, x.new_ones((1, 1, *layer.kernel_size)), x[:, :1])
    return lambda v: single(v.sum(1, keepdim=True)).expand(x.shape)
