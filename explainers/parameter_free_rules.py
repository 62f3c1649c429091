"""LRP rules for parameter-free layers: activations, pooling and gates.

Like the affine rules (:mod:`.rules`), each is a module replacing one layer in the private LRP
copy of the model; relevance at a tensor ``t`` is ``t ⊙ g_t`` with ``g_t`` the modified
gradient (seed 003, Appendix B, Algorithm 8):

- element-wise activations and unfolded BatchNorms pass relevance on unchanged (:class:`Pass`);
- average pooling redistributes it ε-normalized, proportionally to the inputs (:class:`Norm`);
- max pooling gives it to the maximum of each window (:class:`WinnerTakesAll`);
- a gate (the sigmoid of a squeeze-excitation branch) is a constant weight (:class:`Gate`).

ReLU, Flatten, Dropout (eval), Identity and linear forward code (``+``, ``cat``, reshapes) need
no rule: their plain gradient is the LRP propagation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .rules import stabilize


class _ModifiedGradient(torch.autograd.Function):
    """Forward: ``value``. Backward: ``∂/∂z_i = grad ⊙ scale_i`` for every pair ``(z_i, scale_i)``."""

    @staticmethod
    def forward(ctx, value: Tensor, *terms: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(*terms[1::2])
        # a fresh tensor object (not the input itself) so callers may modify it in place
        return value.detach()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        grads: list[Tensor | None] = [None]
        for i, scale in enumerate(ctx.saved_tensors):
            grads += [grad * scale if ctx.needs_input_grad[1 + 2 * i] else None, None]
        return tuple(grads)


def modified_gradient(value: Tensor, *terms: tuple[Tensor, Tensor]) -> Tensor:
    """Return ``value`` (exactly) with the gradient of ``Σ_i z_i ⊙ [scale_i]_cst``.

    ``value`` is the layer's true output (computed without gradient); every ``z_i`` is a
    differentiable modified forward of the layer's input and ``scale_i`` a detached tensor of
    ``value``'s shape. Equivalent to seed 003's ``z ⊙ [y ⊘ z]_cst`` without its rounding of ``y``.
    Used by the parameter-free rules (:class:`Pass`, :class:`Norm`).
    """
    flat: list[Tensor] = []
    for z, scale in terms:
        flat += [z, scale.detach()]
    return _ModifiedGradient.apply(value, *flat)


class Pass(nn.Module):
    """Pass rule for element-wise activations: ``R_in = R_out`` (zennit ``Pass``).

    In gradient form ``g_in = act(x) ⊘ x · g_out`` (0 where ``x = 0``), so ``x ⊙ g_in = act(x) ⊙ g_out``.
    ReLU needs no wrapper: its own gradient ``1[x > 0]`` equals ``relu(x) ⊘ x``.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            a = self.module(x)
            ratio = torch.where(x != 0, a / torch.where(x != 0, x, 1), 0)
        return modified_gradient(a, (x, ratio))


class Norm(nn.Module):
    """Norm rule for parameter-free linear maps (average pooling): ``R_j = x_j ∂z_k/∂x_j / stabilize(z_k) · R_k``.

    The ε rule with the layer's own map and a fixed stabilizer (zennit ``Norm``).
    """

    def __init__(self, module: nn.Module, stabilizer: float = 1e-6) -> None:
        super().__init__()
        self.module = module
        self.stabilizer = float(stabilizer)

    def forward(self, *inputs: Tensor) -> Tensor:
        z = self.module(*inputs)
        y = z.detach()
        return modified_gradient(y, (z, y / stabilize(y, self.stabilizer)))


class Gate(nn.Module):
    """A gate — the sigmoid of a squeeze-excitation branch — acts as a constant per-channel weight.

    In ``features ⊙ gate(features)`` the gate value is detached: the product then passes the
    relevance of its output to ``features`` unchanged (``R = features ⊙ gate ⊙ g``), and the
    gate branch receives none, as for any weight (the treatment of multiplicative gates in
    LRP for LSTMs, Arras et al., 2017). Which sigmoids are gates is read from the data flow.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.module(x)


class _WinnerTakesAll(torch.autograd.Function):
    """Max pooling whose backward recomputes the winners from the kept input instead of storing indices."""

    @staticmethod
    def forward(ctx, x: Tensor, module: nn.Module) -> Tensor:  # type: ignore[override]
        ctx.state = (x.detach(), x._version, module)
        return module(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        x, version, module = ctx.state
        ctx.state = None
        if x._version != version:
            raise RuntimeError(f"the input of {module} was modified in place before the LRP backward pass")
        with torch.enable_grad():
            probe = x.detach().requires_grad_(True)
            return torch.autograd.grad(module(probe), probe, grad)[0], None


class WinnerTakesAll(nn.Module):
    """Max pooling: all relevance of a window goes to its maximum — its plain gradient.

    The pooling's own backward would keep the argmax indices (8 bytes per output) until the
    backward pass; this rule keeps only the input (already kept by the preceding ReLU) and
    recomputes the winners, identically, when the relevance arrives.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return _WinnerTakesAll.apply(x, self.module)
