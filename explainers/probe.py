"""A one-sample probe run that checks what module inspection cannot see: the forward code.

LRP is computed as a modified gradient (:mod:`.rules`), so operations written directly in a
``forward`` method are explained by their plain gradient. For operations that are linear
without bias (``+``, ``cat``, ``mean``, average pooling, reshapes, scaling by a constant) the
plain gradient *is* the LRP-0/Norm propagation ``R_j = x_j ∂y_k/∂x_j / y_k · R_k``, and for
ReLU and max pooling it is the Pass/winner-takes-all rule; residual additions such as
torchvision ResNet's ``out += identity`` are therefore explained correctly. Any other
operation (``sigmoid``, ``softmax``, products of two input-dependent tensors, …) would be a
silent gradient fall back, so the probe reports it as :class:`UnsupportedModelError`.

The probe also checks the two structural assumptions made from registration order: the first
registered Linear/Conv (which gets the first-layer rule) is the first to run, and every folded
BatchNorm read the output of the layer it was folded into.

It runs once per explainer, on the first batch's first sample, on a throw-away copy of the LRP
model, recording ``torch`` calls with a thread-local ``TorchFunctionMode``.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .errors import UnsupportedModelError
from .rules import AffineRule

#: shape and bookkeeping operations: the gradient routes relevance unchanged
_STRUCTURAL = {
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute", "transpose", "t",
    "squeeze", "unsqueeze", "contiguous", "clone", "expand", "expand_as", "__getitem__", "narrow",
    "select", "chunk", "split", "unbind", "cat", "concat", "concatenate", "stack", "hstack", "vstack",
    "repeat", "flip", "movedim", "swapaxes", "to", "float", "double", "type_as", "dropout", "pad",
}  # fmt: skip
#: bias-free linear maps (gradient = LRP-0) and winner-takes-all / ReLU (gradient = Pass)
_LINEAR = {
    "add", "__add__", "__radd__", "__iadd__", "add_", "sub", "__sub__", "__rsub__", "__isub__", "sub_",
    "neg", "__neg__", "sum", "mean", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "interpolate", "relu", "relu_", "max_pool1d",
    "max_pool2d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "amax",
}  # fmt: skip
#: linear only while at most one operand depends on the input (and never the divisor)
_SCALING = {"mul", "__mul__", "__rmul__", "__imul__", "mul_", "matmul", "__matmul__", "mm", "bmm", "einsum"}
_DIVISION = {"div", "__truediv__", "__itruediv__", "div_", "true_divide"}


def _dependent(value: object) -> list[Tensor]:
    """Tensors in ``value`` (nested tuples, lists, dicts) that depend on the probe input."""
    if isinstance(value, Tensor):
        return [value] if value.requires_grad else []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [tensor for item in value for tensor in _dependent(item)]
    return []


def _explained_by_gradient(name: str, args: tuple, kwargs: dict) -> bool:
    if name in _STRUCTURAL or name in _LINEAR or name.endswith("__get__"):
        return True
    if name in _SCALING:
        return len(_dependent((args, kwargs))) <= 1
    if name in _DIVISION:
        return len(args) > 1 and not _dependent(args[1:]) and not _dependent(kwargs)
    return False


class _Recorder(TorchFunctionMode):
    """Records input-dependent torch calls made by forward code outside known layers."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = ["<model>"]
        self.depth = 0
        self.offenders: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", repr(func))
        if self.depth == 0 and _dependent(out) and not _explained_by_gradient(name, args, kwargs):
            entry = (self.paths[-1], f"functional {name}")
            if entry not in self.offenders:
                self.offenders.append(entry)
        return out


def _strip(path: str) -> str:
    """Path in the user's model (the LRP copy wraps it as ``nn.Sequential(model)``)."""
    return path[2:] if path.startswith("0.") else ("<model>" if path in ("0", "") else path)


def probe(lrp_model: nn.Module, x: Tensor, leaves: tuple[type, ...], folded: list[tuple[str, str]]) -> None:
    """Run one sample of ``x`` through a copy of ``lrp_model``; raise on anything unexplainable.

    ``leaves`` are the module types whose forward is trusted (rules and known layers);
    ``folded`` the ``(layer_path, batch_norm_path)`` pairs merged by the canonizer.
    """
    with torch.inference_mode(False):
        model = copy.deepcopy(lrp_model)
    recorder = _Recorder()
    outputs: dict[str, Tensor] = {}
    executed: list[str] = []
    misfolded: list[tuple[str, str]] = []
    layer_of = {norm: layer for layer, norm in folded}

    def pre_hook(path: str, trusted: bool):
        def hook(module: nn.Module, inputs: tuple) -> None:
            recorder.paths.append(_strip(path))
            recorder.depth += trusted
            if path in layer_of and not (inputs and inputs[0] is outputs.get(layer_of[path])):
                misfolded.append((_strip(path), f"BatchNorm folded into {_strip(layer_of[path])} but not fed by it"))

        return hook

    def post_hook(path: str, trusted: bool):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            recorder.paths.pop()
            recorder.depth -= trusted
            if isinstance(module, AffineRule):
                outputs[path] = output
                executed.append(path)

        return hook

    for path, module in model.named_modules():
        if path:
            trusted = isinstance(module, leaves)
            module.register_forward_pre_hook(pre_hook(path, trusted))
            module.register_forward_hook(post_hook(path, trusted))
    with torch.inference_mode(False), torch.enable_grad():
        sample = x[:1].detach().clone().requires_grad_(True)
        with recorder:
            model(sample)
    if recorder.offenders:
        raise UnsupportedModelError(recorder.offenders, "operations without an LRP rule in forward code")
    if misfolded:
        raise UnsupportedModelError(misfolded, "cannot fold BatchNorm")
    rules = [path for path, module in model.named_modules() if isinstance(module, AffineRule)]
    if executed and rules and executed[0] != rules[0]:
        raise UnsupportedModelError(
            [(_strip(rules[0]), "registered first"), (_strip(executed[0]), "runs first")],
            "the first Linear/Conv in registration order (given the first-layer rule) is not the first to run",
        )
