"""LRP rules, written as modified-gradient layers.

Every rule is a module that replaces one layer in a private copy of the model. Its forward
returns exactly the layer's output ``y``, but its gradient is modified so that, with the
relevance at every tensor ``t`` written as ``R_t = t ⊙ g_t`` (``g_t`` the modified gradient),
one ordinary backward pass through the whole model computes the LRP backward pass. This is the
forward-hook formulation of Samek et al., "Toward Interpretable Machine Learning"
(seed 003, Appendix B, Algorithm 8)::

    out = z ⊙ [y ⊘ stabilize(z)]_cst

where ``z`` is the rule's modified forward (e.g. ``W⁺x⁺ + b⁺`` for z⁺) and ``[·]_cst`` is
detached. Backward gives ``g_in = ∂z/∂x ᵀ (R_out ⊘ stabilize(z))`` and hence
``R_in = x ⊙ g_in``, the generic LRP rule
``R_j = Σ_k a_j ρ(w_jk) / (ε + Σ_j a_j ρ(w_jk)) · R_k``.
Instead of the literal product (whose value is ``y·z/stabilize(z) ≠ y``) we use
:func:`modified_gradient`, which returns ``y`` bit-exactly and routes the gradient to ``z``
scaled by ``y ⊘ stabilize(z)``. Rule definitions follow zennit (Anders et al., 2021), so
results agree with ``zennit.rules``; parameters are modified once, at construction, never
swapped during backward, so the rules are thread-safe.

First-layer rules (:class:`Flat`, :class:`ZBox`) compute the relevance itself as their
input gradient (``yields_relevance = True``): the explainer returns ``g_x`` instead of
``x ⊙ g_x``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AffineRule",
    "stabilize",
    "modified_gradient",
    "Epsilon",
    "ZPlus",
    "AlphaBeta",
    "Gamma",
    "Flat",
    "ZBox",
    "Pass",
    "Norm",
]

Affine = nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """Return ``z + ε·sign(z)`` with ``sign(0) = +1`` (zennit's ``Stabilizer``), a safe denominator."""
    return z + torch.where(z >= 0, epsilon, -epsilon).to(z.dtype)


class _ModifiedGradient(torch.autograd.Function):
    """Forward: ``value``. Backward: ``∂/∂z_i = grad ⊙ scale_i`` for every pair ``(z_i, scale_i)``."""

    @staticmethod
    def forward(ctx, value: Tensor, *terms: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(*terms[1::2])
        # a fresh tensor object (not the input itself) so callers may modify it in place
        return value.detach()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        scales = ctx.saved_tensors
        grads: list[Tensor | None] = [None]
        for i, scale in enumerate(scales):
            term = grad * scale if ctx.needs_input_grad[1 + 2 * i] else None
            if term is not None and len(scales) > 1 and not bool(term.any()):
                term = None  # e.g. γ's negative outputs behind a ReLU: skip that branch's backward
            grads += [term, None]
        return tuple(grads)


def modified_gradient(value: Tensor, *terms: tuple[Tensor, Tensor]) -> Tensor:
    """Return ``value`` (exactly) with the gradient of ``Σ_i z_i ⊙ [scale_i]_cst``.

    ``value`` is the layer's true output (computed without gradient); every ``z_i`` is a
    differentiable modified forward of the layer's input and ``scale_i`` a detached tensor of
    ``value``'s shape. Equivalent to seed 003's ``z ⊙ [y ⊘ z]_cst`` without its rounding of ``y``.
    """
    flat: list[Tensor] = []
    for z, scale in terms:
        flat += [z, scale.detach()]
    return _ModifiedGradient.apply(value, *flat)


def _affine(layer: Affine, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The layer's own linear map (stride, padding, groups, …) with other parameters."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, bias)
    return layer._conv_forward(x, weight, bias)


def _signs(x: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(x⁺, x⁻)``; ``x⁻`` is ``None`` when ``x ≥ 0`` (typical after ReLU), saving a pass."""
    if x.numel() == 0 or bool(x.amin() >= 0):
        return x, None
    return x.clamp(min=0), x.clamp(max=0)


def _register_stacked(rule: nn.Module, name: str, weights: tuple[str, str], biases: tuple[str, str]) -> None:
    """Register ``name_weight``/``name_bias``: two weight variants stacked along output channels."""
    first, second = (getattr(rule, w) for w in weights)
    rule.register_buffer(f"{name}_weight", torch.cat([first, second]), persistent=False)
    bias_first, bias_second = (getattr(rule, b) for b in biases)
    if bias_first is None:
        bias_first, bias_second = first.new_zeros(first.shape[0]), first.new_zeros(first.shape[0])
    rule.register_buffer(f"{name}_bias", torch.cat([bias_first, bias_second]), persistent=False)


def _stacked_affine(rule: nn.Module, x: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """Both weight variants applied to ``x`` in one pass, split back into two outputs."""
    layer = rule.layer
    weight, bias = getattr(rule, f"{name}_weight"), getattr(rule, f"{name}_bias")
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, bias).chunk(2, dim=-1)
    if layer.groups == 1:
        return layer._conv_forward(x, weight, bias).chunk(2, dim=1)
    half = weight.shape[0] // 2  # grouped: keep the group structure, two passes
    return (layer._conv_forward(x, weight[:half], bias[:half]), layer._conv_forward(x, weight[half:], bias[half:]))


class AffineRule(nn.Module):
    """Base of the rules for Linear/Conv layers: holds the layer, the stabilizer and ``zero_bias``."""

    yields_relevance = False

    def __init__(self, layer: Affine, stabilizer: float, zero_bias: bool) -> None:
        super().__init__()
        self.layer = layer
        self.stabilizer = float(stabilizer)
        self.zero_bias = bool(zero_bias)

    def _bias(self, transform=lambda b: b) -> Tensor | None:
        """The layer bias after ``transform``, or ``None`` if absent or zeroed (``zero_bias``)."""
        if self.layer.bias is None or self.zero_bias:
            return None
        return transform(self.layer.bias.detach())

    def _output(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.layer(x)

    def extra_repr(self) -> str:
        return f"stabilizer={self.stabilizer}, zero_bias={self.zero_bias}"


class Epsilon(AffineRule):
    """LRP-ε (Bach et al., 2015): ``R_j = Σ_k x_j w_jk / stabilize_ε(z_k) · R_k``, ``z = Wx + b``."""

    def __init__(self, layer: Affine, epsilon: float = 1e-6, zero_bias: bool = False) -> None:
        super().__init__(layer, epsilon, zero_bias)

    def forward(self, x: Tensor) -> Tensor:
        bias = self._bias()
        z = _affine(self.layer, x, self.layer.weight.detach(), bias)
        # with zero_bias the modified forward differs from the layer's output
        y = self._output(x) if bias is None and self.layer.bias is not None else z.detach()
        return modified_gradient(y, (z, y / stabilize(z.detach(), self.stabilizer)))


class ZPlus(AffineRule):
    """LRP-z⁺ (Montavon et al., 2017), zennit's sign-aware form (= α1β0).

    ``z = W⁺x⁺ + b⁺ + W⁻x⁻``, ``R_j = (x⁺_j w⁺_jk + x⁻_j w⁻_jk) / stabilize(z_k) · R_k``.
    """

    def __init__(self, layer: Affine, stabilizer: float = 1e-6, zero_bias: bool = False) -> None:
        super().__init__(layer, stabilizer, zero_bias)
        weight = layer.weight.detach()
        self.register_buffer("w_pos", weight.clamp(min=0), persistent=False)
        self.register_buffer("w_neg", weight.clamp(max=0), persistent=False)
        self.register_buffer("b_pos", self._bias(lambda b: b.clamp(min=0)), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self._output(x)
        x_pos, x_neg = _signs(x)
        z = _affine(self.layer, x_pos, self.w_pos, self.b_pos)
        if x_neg is not None:
            z = z + _affine(self.layer, x_neg, self.w_neg, None)
        return modified_gradient(y, (z, y / stabilize(z.detach(), self.stabilizer)))


class AlphaBeta(AffineRule):
    """LRP-αβ (Bach et al., 2015), ``α − β = 1``, sign-aware as in zennit.

    ``z⁺ = W⁺x⁺ + b⁺ + W⁻x⁻`` (positive contributions), ``z⁻ = W⁻x⁺ + b⁻ + W⁺x⁻``;
    ``R_j = α·(z⁺-contributions of j)/stabilize(z⁺) R − β·(z⁻-contributions of j)/stabilize(z⁻) R``.
    For ``x ≥ 0`` both are one convolution with stacked weights ``[W⁺; W⁻]`` and ``y = z⁺ + z⁻``.
    """

    def __init__(
        self, layer: Affine, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6, zero_bias: bool = False
    ) -> None:
        if alpha < 0 or beta < 0 or abs(alpha - beta - 1.0) > 1e-12:
            raise ValueError(f"alpha, beta must be >= 0 with alpha - beta = 1, got alpha={alpha}, beta={beta}")
        super().__init__(layer, stabilizer, zero_bias)
        self.alpha, self.beta = float(alpha), float(beta)
        weight = layer.weight.detach()
        self.register_buffer("w_pos", weight.clamp(min=0), persistent=False)
        self.register_buffer("w_neg", weight.clamp(max=0), persistent=False)
        self.register_buffer("b_pos", self._bias(lambda b: b.clamp(min=0)), persistent=False)
        self.register_buffer("b_neg", self._bias(lambda b: b.clamp(max=0)), persistent=False)
        _register_stacked(self, "pos_neg", ("w_pos", "w_neg"), ("b_pos", "b_neg"))

    def forward(self, x: Tensor) -> Tensor:
        x_pos, x_neg = _signs(x)
        if x_neg is None:
            z_pos, z_neg = _stacked_affine(self, x, "pos_neg")
            y = self._output(x) if self.zero_bias and self.layer.bias is not None else (z_pos + z_neg).detach()
        else:
            y = self._output(x)
            z_pos = _affine(self.layer, x_pos, self.w_pos, self.b_pos) + _affine(self.layer, x_neg, self.w_neg, None)
            z_neg = _affine(self.layer, x_pos, self.w_neg, self.b_neg) + _affine(self.layer, x_neg, self.w_pos, None)
        return modified_gradient(
            y,
            (z_pos, self.alpha * y / stabilize(z_pos.detach(), self.stabilizer)),
            (z_neg, -self.beta * y / stabilize(z_neg.detach(), self.stabilizer)),
        )


class Gamma(AffineRule):
    """LRP-γ (Montavon et al., 2019), generalised to signed inputs and outputs (Andéol et al., 2021; zennit).

    With ``W↑ = W + γW⁺`` and ``W↓ = W + γW⁻``: outputs ``y > 0`` are explained by
    ``z↑ = W↑x⁺ + b↑ + W↓x⁻``, outputs ``y < 0`` by ``z↓ = W↓x⁺ + b↓ + W↑x⁻``;
    ``R_j = Σ_k (contribution of j to z_k) / stabilize(z_k) · R_k`` with the matching ``z``.
    For ``x ≥ 0``, ``y = (z↑ + z↓)/(2 + γ)`` needs no extra pass, and behind a ReLU the ``z↓``
    branch gets no gradient, so its backward is skipped.
    """

    def __init__(self, layer: Affine, gamma: float = 0.25, stabilizer: float = 1e-6, zero_bias: bool = False) -> None:
        super().__init__(layer, stabilizer, zero_bias)
        self.gamma = float(gamma)
        weight = layer.weight.detach()
        self.register_buffer("w_up", weight + gamma * weight.clamp(min=0), persistent=False)
        self.register_buffer("w_down", weight + gamma * weight.clamp(max=0), persistent=False)
        self.register_buffer("b_up", self._bias(lambda b: b + gamma * b.clamp(min=0)), persistent=False)
        self.register_buffer("b_down", self._bias(lambda b: b + gamma * b.clamp(max=0)), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x_pos, x_neg = _signs(x)
        z_up = _affine(self.layer, x_pos, self.w_up, self.b_up)
        z_down = _affine(self.layer, x_pos, self.w_down, self.b_down)
        if x_neg is None and not (self.zero_bias and self.layer.bias is not None):
            y = ((z_up + z_down) / (2.0 + self.gamma)).detach()
        else:
            y = self._output(x)
        if x_neg is not None:
            z_up = z_up + _affine(self.layer, x_neg, self.w_down, None)
            z_down = z_down + _affine(self.layer, x_neg, self.w_up, None)
        return modified_gradient(
            y,
            (z_up, y.clamp(min=0) / stabilize(z_up.detach(), self.stabilizer)),
            (z_down, y.clamp(max=0) / stabilize(z_down.detach(), self.stabilizer)),
        )


def _channel_dim(layer: Affine) -> int:
    return -1 if isinstance(layer, nn.Linear) else 1


def _broadcast_bias(layer: Affine, bias: Tensor, output: Tensor) -> Tensor:
    return bias if isinstance(layer, nn.Linear) else bias.view(-1, *([1] * (output.ndim - 2)))


def _ones_affine(layer: Affine, x: Tensor) -> Tensor:
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
    ones = x.new_ones(layer.weight.shape)
    return layer._conv_forward(x, ones, None)


class Flat(AffineRule):
    """LRP-flat (Lapuschkin et al., 2019): relevance spread uniformly over the receptive field.

    ``R_j = Σ_k 1 / stabilize(Σ_j' 1) · R_k`` — the z-rule with ``w → 1``, ``x → 1`` and no bias.
    Because the map is linear, ``∂(1ᵀx)/∂x`` equals the gradient at the all-ones input, so the
    input gradient of ``z = ones-layer(x)`` *is* the relevance (``yields_relevance``); the
    denominator is the ones-layer applied to an all-ones input (in-bounds receptive-field size).
    """

    yields_relevance = True

    def __init__(self, layer: Affine, stabilizer: float = 1e-6, zero_bias: bool = False) -> None:
        super().__init__(layer, stabilizer, zero_bias)

    def forward(self, x: Tensor) -> Tensor:
        y = self._output(x)
        with torch.no_grad():
            size = _ones_affine(self.layer, x.new_ones((1, *x.shape[1:])))
        return modified_gradient(y, (_ones_affine(self.layer, x), y / stabilize(size, self.stabilizer)))


class ZBox(AffineRule):
    """LRP-z^B (Montavon et al., 2017) for inputs bounded by ``low ≤ x ≤ high`` (seed 003, Alg. 7).

    ``z = Wx − W⁺l − W⁻h``, ``R_i = Σ_k (x_i w_ik − l_i w⁺_ik − h_i w⁻_ik) / stabilize(z_k) · R_k``.
    Algorithm 8 recombines three gradients, ``x⊙c₁ + l⊙c₂ + h⊙c₃``; we obtain that sum as a
    single input gradient by differentiating ``W(x⊙[x]) − W⁺(x⊙l) − W⁻(x⊙h)``, whose gradient
    w.r.t. ``x`` is ``[x]⊙Wᵀv − l⊙W⁺ᵀv − h⊙W⁻ᵀv`` (``yields_relevance``).
    """

    yields_relevance = True

    def __init__(
        self,
        layer: Affine,
        low: float | Tensor,
        high: float | Tensor,
        stabilizer: float = 1e-6,
        zero_bias: bool = False,
    ) -> None:
        super().__init__(layer, stabilizer, zero_bias)
        weight = layer.weight.detach()
        self.register_buffer("w_pos", weight.clamp(min=0), persistent=False)
        self.register_buffer("w_neg", weight.clamp(max=0), persistent=False)
        self.register_buffer("low", torch.as_tensor(low, dtype=weight.dtype, device=weight.device), persistent=False)
        self.register_buffer("high", torch.as_tensor(high, dtype=weight.dtype, device=weight.device), persistent=False)
        self._stack = isinstance(layer, nn.Linear) or layer.groups == 1
        stacked = torch.cat([weight, -self.w_pos, -self.w_neg], dim=1) if self._stack else None
        self.register_buffer("stacked_weight", stacked, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.layer.weight.detach()
        low = self.low.to(x.dtype).expand((1, *x.shape[1:]))
        high = self.high.to(x.dtype).expand((1, *x.shape[1:]))
        with torch.no_grad():
            linear = _affine(self.layer, x, weight, None)
            y = linear if self.layer.bias is None else linear + _broadcast_bias(self.layer, self.layer.bias, linear)
            z = linear - (_affine(self.layer, low, self.w_pos, None) + _affine(self.layer, high, self.w_neg, None))
        if self._stack:  # one pass over stacked inputs [x⊙[x], x⊙l, x⊙h] and weights [W, −W⁺, −W⁻]
            stacked = torch.cat([x * x.detach(), x * low, x * high], dim=_channel_dim(self.layer))
            differentiable = _affine(self.layer, stacked, self.stacked_weight, None)
        else:
            differentiable = (
                _affine(self.layer, x * x.detach(), weight, None)
                - _affine(self.layer, x * low, self.w_pos, None)
                - _affine(self.layer, x * high, self.w_neg, None)
            )
        return modified_gradient(y, (differentiable, y / stabilize(z, self.stabilizer)))


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
