"""LRP rules for Linear/Conv layers, written as modified-gradient layers.

Every rule is a module that replaces one layer in a private copy of the model. Its forward
returns the layer's output ``y``, but its gradient is modified so that, with the relevance at
every tensor ``t`` written as ``R_t = t ⊙ g_t`` (``g_t`` the modified gradient), one ordinary
backward pass through the whole model computes the LRP backward pass. This is the forward-hook
formulation of Samek et al., "Toward Interpretable Machine Learning" (seed 003, Appendix B,
Algorithm 8)::

    out = z ⊙ [y ⊘ stabilize(z)]_cst

where ``z`` is the rule's modified forward (e.g. ``W⁺x⁺ + b⁺`` for z⁺) and ``[·]_cst`` is
detached. Backward gives ``g_in = ∂z/∂x ᵀ (g_out ⊙ y ⊘ stabilize(z))`` and hence
``R_in = x ⊙ g_in``, the generic LRP rule
``R_j = Σ_k a_j ρ(w_jk) / (ε + Σ_j a_j ρ(w_jk)) · R_k``.

Each rule is fused into one autograd node (:class:`_Propagate`): the forward computes ``y``
and the ``z`` it needs without building a graph and keeps only the *scale* ``y ⊘ stabilize(z)``;
the backward multiplies the incoming gradient by it and applies the transposed modified
weights (:mod:`.linear_maps`). Behind a ReLU, z⁺ keeps nothing at all: it computes ``z`` in the
backward pass from the input and the ReLU's output, which autograd keeps anyway
(:attr:`AffineRule.relu_fed`). So z⁺ on a ReLU network costs the plain gradient plus one
convolution per layer, and no more memory. Rule definitions follow zennit (Anders et al.,
2021), so results agree with ``zennit.rules``; modified weights are computed once, at
construction, never swapped during backward, so the rules are thread-safe.

First-layer rules (:class:`Flat`, :class:`ZBox`) compute the relevance itself as their input
gradient (``yields_relevance = True``): the explainer returns ``g_x`` instead of ``x ⊙ g_x``.
Rules for parameter-free layers are in :mod:`.parameter_free_rules`.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .linear_maps import Affine, adjoint, affine, broadcast, channel_dim, ones_adjoint, ones_affine

__all__ = ["AffineRule", "stabilize", "Epsilon", "ZPlus", "AlphaBeta", "Gamma", "Flat", "ZBox"]

#: maps the scaled output gradients ``v_i = g_out ⊙ scale_i`` to the input gradient
Backward = Callable[[Sequence[Tensor]], Tensor]
#: the gradient scales ``y ⊘ stabilize(z)``, or a callable computing them in the backward pass
Scales = tuple[Tensor, ...] | Callable[[], tuple[Tensor, ...]]


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """Return ``z + ε·sign(z)`` with ``sign(0) = +1`` (zennit's ``Stabilizer``), a safe denominator."""
    return z + (z >= 0).to(z.dtype).mul_(2 * epsilon).sub_(epsilon)  # ±ε in z's dtype


class _Propagate(torch.autograd.Function):
    """One affine rule as one autograd node: forward ``y``; backward ``rule_backward(g ⊙ scale_i)``.

    ``rule.propagation(x)`` returns ``(y, scales, backward)``; ``scales`` may be a callable
    that computes them only in the backward pass (:class:`ZPlus`, :class:`Flat` behind a ReLU).
    They are kept on ``ctx`` (not ``save_for_backward``: they are neither inputs nor outputs)
    and dropped as soon as the backward has used them, so the peak memory stays low.
    """

    @staticmethod
    def forward(ctx, x: Tensor, rule: "AffineRule") -> Tensor:  # type: ignore[override]
        y, scales, backward = rule.propagation(x)
        ctx.state = (scales, backward)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None]:  # type: ignore[override]
        scales, backward = ctx.state
        ctx.state = None
        with _no_autocast(grad.device):  # dtypes are handled explicitly (autocast bf16/fp16 forwards)
            scaled = [_times(scale, grad) for scale in (scales() if callable(scales) else scales)]
            del scales
            return backward(scaled), None


def _times(scale: Tensor, grad: Tensor) -> Tensor:
    """``scale ⊙ grad``, in the scale's buffer (owned by the rule, used once) when shapes and dtypes allow."""
    if scale.shape == grad.shape and torch.result_type(scale, grad) == scale.dtype:
        return scale.mul_(grad)
    return scale * grad


def _no_autocast(device: torch.device):
    if device.type in ("cpu", "cuda") and torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


def _divide(y: Tensor, z: Tensor) -> Tensor:
    """``y ⊘ z``, written into ``z``'s buffer when the dtypes allow (``z`` is a temporary)."""
    return torch.div(y, z, out=z) if z.dtype == torch.result_type(y, z) else y / z


def _deferred(layer: Affine, x: Tensor, y: Tensor, weight: Tensor, bias: Tensor, scales) -> Callable[[], tuple]:
    """``() ↦ scales(y, weight·x + bias)``, computed when called (in the backward pass).

    ``x`` must not change in between (checked with its version counter); ``y`` is read back
    from the output tensor, which only a ReLU may have overwritten (:attr:`AffineRule.relu_fed`).
    """
    x, version, output = x.detach(), x._version, y.detach()

    def deferred() -> tuple[Tensor, ...]:
        if x._version != version:
            raise RuntimeError(f"the input of an LRP rule for {layer} was modified in place after the rule read it")
        return scales(output, affine(layer, x, weight.to(x.dtype), bias.to(x.dtype)))

    return deferred


def _output(layer: Affine, x: Tensor) -> Tensor:
    """The layer's own output (without the module call machinery: the copy has no hooks)."""
    return affine(layer, x, layer.weight, layer.bias)


def _nonnegative(x: Tensor) -> bool:
    """``x ≥ 0`` everywhere (typical after ReLU): the sign-aware rules then need one pass, not two."""
    return x.numel() == 0 or bool(x.amin() >= 0)


class AffineRule(nn.Module):
    """Base of the rules for Linear/Conv layers: holds the layer, the stabilizer and ``zero_bias``.

    Subclasses implement :meth:`propagation`; the forward wraps it in one autograd node.
    """

    yields_relevance = False
    #: Set from the data flow (:mod:`.dataflow`) when the layer's output is read by a single ReLU
    #: and by nothing that modifies it in place: the backward pass may then read ``y`` back from
    #: the output tensor (after an in-place ReLU it holds ``relu(y)``, equal to ``y`` wherever the
    #: ReLU passes gradient) and compute the scale there, instead of keeping one per layer.
    relu_fed = False

    def __init__(self, layer: Affine, stabilizer: float, zero_bias: bool) -> None:
        super().__init__()
        self.layer = layer
        self.stabilizer = float(stabilizer)
        self.zero_bias = bool(zero_bias)

    def __getattr__(self, name: str):
        """The layer's own attributes (``weight``, ``in_features``, …), for forward code that reads them
        (Swin's attention passes ``self.qkv.weight`` to ``F.linear``)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["layer"], name)

    def _bias(self, transform=lambda b: b) -> Tensor | None:
        """The layer bias after ``transform``, or ``None`` if absent or zeroed (``zero_bias``)."""
        if self.layer.bias is None or self.zero_bias:
            return None
        return transform(self.layer.bias.detach())

    def _stable_bias(self, bias: Tensor | None) -> Tensor:
        """``bias + ε`` (zeros + ε without bias): ``W⁺x + b⁺ + ε`` is z⁺ stabilized, in one pass."""
        weight = self.layer.weight
        base = weight.new_zeros(weight.shape[0]) if bias is None else bias
        return base + self.stabilizer

    def _zeroed_bias(self) -> bool:
        """``zero_bias`` removes a bias that exists: ``z`` then differs from the layer output."""
        return self.zero_bias and self.layer.bias is not None

    def propagation(self, x: Tensor) -> tuple[Tensor, Scales, Backward]:
        """``(y, scales, backward)``: the output, the gradient scales, the modified input gradient."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return _Propagate.apply(x, self)

    def extra_repr(self) -> str:
        return f"stabilizer={self.stabilizer}, zero_bias={self.zero_bias}"


class Epsilon(AffineRule):
    """LRP-ε (Bach et al., 2015): ``R_j = Σ_k x_j w_jk / stabilize_ε(z_k) · R_k``, ``z = Wx + b``."""

    def __init__(self, layer: Affine, epsilon: float = 1e-6, zero_bias: bool = False) -> None:
        super().__init__(layer, epsilon, zero_bias)

    def propagation(self, x: Tensor) -> tuple[Tensor, Scales, Backward]:
        weight = self.layer.weight
        y = affine(self.layer, x, weight, self.layer.bias)
        z = affine(self.layer, x, weight, None) if self._zeroed_bias() else y
        transpose = adjoint(self.layer, weight, x)
        return y, (y / stabilize(z, self.stabilizer),), lambda v: transpose(v[0])


def _sign_split(
    layer: Affine, x: Tensor, first: tuple[Tensor, Tensor | None], second: tuple[Tensor, Tensor | None]
) -> tuple[Tensor, Tensor, Callable[[Tensor, Tensor], Tensor]]:
    """Sign-aware pair of modified forwards for inputs of both signs (zennit's convention).

    With weights ``A`` (``first``) and ``B`` (``second``): ``z_a = A x⁺ + b_a + B x⁻`` and
    ``z_b = B x⁺ + b_b + A x⁻``, and the backward ``(v_a, v_b) ↦ [x>0]⊙(Aᵀv_a + Bᵀv_b) +
    [x<0]⊙(Bᵀv_a + Aᵀv_b)`` (``v_b`` may be ``None`` when only ``z_a`` is used).
    """
    (a, bias_a), (b, bias_b) = first, second
    pos, neg = x.clamp(min=0), x.clamp(max=0)
    z_a = affine(layer, pos, a, bias_a) + affine(layer, neg, b, None)
    z_b = affine(layer, pos, b, bias_b) + affine(layer, neg, a, None)
    up, down = adjoint(layer, a, x), adjoint(layer, b, x)
    is_pos, is_neg = x > 0, x < 0

    def backward(v_a: Tensor, v_b: Tensor | None) -> Tensor:
        on_pos, on_neg = up(v_a), down(v_a)
        if v_b is not None:
            on_pos, on_neg = on_pos + down(v_b), on_neg + up(v_b)
        return on_pos * is_pos + on_neg * is_neg

    return z_a, z_b, backward


class ZPlus(AffineRule):
    """LRP-z⁺ (Montavon et al., 2017), zennit's sign-aware form (= α1β0).

    ``z = W⁺x⁺ + b⁺ + W⁻x⁻``, ``R_j = (x⁺_j w⁺_jk + x⁻_j w⁻_jk) / stabilize(z_k) · R_k``. For
    ``x ≥ 0`` (behind a ReLU) ``z = W⁺x + b⁺ ≥ 0``, so ``stabilize(z) = W⁺x + (b⁺ + ε)``: one
    convolution beside the layer's own, whose output buffer becomes the scale. With
    ``zero_bias``, outputs without any positive contribution (``z⁺ = 0``, e.g. under a
    depthwise filter without positive weights) fall back to the z-rule instead of losing their
    relevance (:meth:`_scales`).
    """

    def __init__(self, layer: Affine, stabilizer: float = 1e-6, zero_bias: bool = False) -> None:
        super().__init__(layer, stabilizer, zero_bias)
        weight = layer.weight.detach()
        self.register_buffer("w_pos", weight.clamp(min=0), persistent=False)
        self.register_buffer("w_neg", weight.clamp(max=0), persistent=False)
        self.register_buffer("b_pos", self._bias(lambda b: b.clamp(min=0)), persistent=False)
        self.register_buffer("b_pos_stable", self._stable_bias(self.b_pos), persistent=False)

    def propagation(self, x: Tensor) -> tuple[Tensor, Scales, Backward]:
        layer = self.layer
        y = _output(layer, x)
        if _nonnegative(x):
            pos, neg = adjoint(layer, self.w_pos, x), adjoint(layer, self.w_neg, x)

            def backward(v: Sequence[Tensor]) -> Tensor:
                return pos(v[0]) if len(v) == 1 or not bool(v[1].any()) else pos(v[0]) + neg(v[1])

            if self.relu_fed:  # z⁺ in the backward pass: no output-sized buffer kept per layer
                return y, _deferred(layer, x, y, self.w_pos, self.b_pos_stable, self._nonnegative_scales), backward
            return y, self._nonnegative_scales(y, affine(layer, x, self.w_pos, self.b_pos_stable)), backward
        z, _, split = _sign_split(layer, x, (self.w_pos, self.b_pos), (self.w_neg, None))
        scales = self._scales(y, stabilize(z, self.stabilizer), z == 0 if self.zero_bias else None)
        return y, scales, lambda v: split(v[0], v[1] if len(v) > 1 and bool(v[1].any()) else None)

    def _nonnegative_scales(self, y: Tensor, z: Tensor) -> tuple[Tensor, ...]:
        """:meth:`_scales` for ``z = W⁺x + b⁺ + ε`` (``x ≥ 0``), which is already stabilized."""
        if not self.zero_bias or (self.relu_fed and self.layer.bias is None):  # (then y ≤ 0 where z⁺ = 0)
            return (_divide(y, z),)
        # with zero_bias, z = W⁺x + ε: exactly ε where no input contributes positively
        return self._scales(y, z, z == broadcast(self.layer, self.b_pos_stable.to(z.dtype), z))

    def _scales(self, y: Tensor, z: Tensor, dead: Tensor | None) -> tuple[Tensor, ...]:
        """``(y ⊘ z,)`` in ``z``'s buffer (``z`` stabilized); plus the scale of the ``dead`` outputs, if any.

        A dead output has no positive contribution (``z⁺ = 0``) and so no z⁺ decomposition;
        zennit lets its relevance vanish in the stabilizer, as a bias would absorb it. With
        ``zero_bias`` nothing should absorb relevance, so the z-rule with the layer's own
        weights takes over there, ``R_j = x_j w_jk / z_k · R_k`` with ``z = Wx``: the second
        scale selects these outputs, and the backward adds the other sign's weights for them.
        """
        scale = _divide(y, z)
        if dead is None or not bool(dead.any()):
            return (scale,)
        plain = y - broadcast(self.layer, self.layer.bias.to(y.dtype), y) if self._zeroed_bias() else y
        scale = torch.where(dead, y / stabilize(plain, self.stabilizer), scale)
        return scale, scale * dead


class AlphaBeta(AffineRule):
    """LRP-αβ (Bach et al., 2015), ``α − β = 1``, sign-aware as in zennit.

    ``z⁺ = W⁺x⁺ + b⁺ + W⁻x⁻`` (positive contributions), ``z⁻ = W⁻x⁺ + b⁻ + W⁺x⁻``;
    ``R_j = α·(z⁺-contributions of j)/stabilize(z⁺) R − β·(z⁻-contributions of j)/stabilize(z⁻) R``.
    For ``x ≥ 0`` both are one convolution with stacked weights ``[W⁺; W⁻]`` and ``y = z⁺ + z⁻``
    (equal to the layer output up to rounding).
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
        stacked_bias = None if self.b_pos is None else torch.cat([self.b_pos, self.b_neg])
        self.register_buffer("w_stacked", torch.cat([self.w_pos, self.w_neg]), persistent=False)
        self.register_buffer("b_stacked", stacked_bias, persistent=False)

    def propagation(self, x: Tensor) -> tuple[Tensor, Scales, Backward]:
        layer = self.layer
        if _nonnegative(x) and (isinstance(layer, nn.Linear) or layer.groups == 1):
            z_pos, z_neg = affine(layer, x, self.w_stacked, self.b_stacked).chunk(2, dim=channel_dim(layer))
            y = _output(layer, x) if self._zeroed_bias() else z_pos + z_neg
            up, down = adjoint(layer, self.w_pos, x), adjoint(layer, self.w_neg, x)
            backward = lambda v: up(v[0]) + down(v[1])  # noqa: E731
        else:
            y = _output(layer, x)
            z_pos, z_neg, split = _sign_split(layer, x, (self.w_pos, self.b_pos), (self.w_neg, self.b_neg))
            backward = lambda v: split(v[0], v[1])  # noqa: E731
        scales = (
            self.alpha * y / stabilize(z_pos, self.stabilizer),
            -self.beta * y / stabilize(z_neg, self.stabilizer),
        )
        return y, scales, backward


class Gamma(AffineRule):
    """LRP-γ (Montavon et al., 2019), generalised to signed inputs and outputs (Andéol et al., 2021; zennit).

    With ``W↑ = W + γW⁺`` and ``W↓ = W + γW⁻``: outputs ``y > 0`` are explained by
    ``z↑ = W↑x⁺ + b↑ + W↓x⁻``, outputs ``y < 0`` by ``z↓ = W↓x⁺ + b↓ + W↑x⁻``;
    ``R_j = Σ_k (contribution of j to z_k) / stabilize(z_k) · R_k`` with the matching ``z``.
    For ``x ≥ 0``, ``y = (z↑ + z↓)/(2 + γ)`` needs no extra pass (equal to the layer output up
    to rounding), and behind a ReLU the ``z↓`` branch gets no gradient, so its backward is skipped.
    """

    def __init__(self, layer: Affine, gamma: float = 0.25, stabilizer: float = 1e-6, zero_bias: bool = False) -> None:
        super().__init__(layer, stabilizer, zero_bias)
        self.gamma = float(gamma)
        weight = layer.weight.detach()
        self.register_buffer("w_up", weight + gamma * weight.clamp(min=0), persistent=False)
        self.register_buffer("w_down", weight + gamma * weight.clamp(max=0), persistent=False)
        self.register_buffer("b_up", self._bias(lambda b: b + gamma * b.clamp(min=0)), persistent=False)
        self.register_buffer("b_down", self._bias(lambda b: b + gamma * b.clamp(max=0)), persistent=False)

    def propagation(self, x: Tensor) -> tuple[Tensor, Scales, Backward]:
        layer = self.layer
        if _nonnegative(x):
            z_up = affine(layer, x, self.w_up, self.b_up)
            z_down = affine(layer, x, self.w_down, self.b_down)
            y = _output(layer, x) if self._zeroed_bias() else (z_up + z_down) / (2.0 + self.gamma)
            up, down = adjoint(layer, self.w_up, x), adjoint(layer, self.w_down, x)

            def backward(v: Sequence[Tensor]) -> Tensor:
                return up(v[0]) + down(v[1]) if bool(v[1].any()) else up(v[0])

        else:
            y = _output(layer, x)
            z_up, z_down, split = _sign_split(layer, x, (self.w_up, self.b_up), (self.w_down, self.b_down))

            def backward(v: Sequence[Tensor]) -> Tensor:
                return split(v[0], v[1] if bool(v[1].any()) else None)

        scales = (
            y.clamp(min=0) / stabilize(z_up, self.stabilizer),
            y.clamp(max=0) / stabilize(z_down, self.stabilizer),
        )
        return y, scales, backward


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

    def propagation(self, x: Tensor) -> tuple[Tensor, Scales, Backward]:
        y = _output(self.layer, x)
        size = stabilize(ones_affine(self.layer, x.new_ones((1, *x.shape[1:]))), self.stabilizer)
        transpose = ones_adjoint(self.layer, x)
        if self.relu_fed:  # read y back in the backward pass (see AffineRule.relu_fed)
            output = y.detach()
            return y, lambda: (output / size,), lambda v: transpose(v[0])
        return y, (y / size,), lambda v: transpose(v[0])


class ZBox(AffineRule):
    """LRP-z^B (Montavon et al., 2017) for inputs bounded by ``low ≤ x ≤ high`` (seed 003, Alg. 7).

    ``z = Wx − W⁺l − W⁻h``, ``R_i = Σ_k (x_i w_ik − l_i w⁺_ik − h_i w⁻_ik) / stabilize(z_k) · R_k``.
    Algorithm 8 recombines three gradients, ``x⊙c₁ + l⊙c₂ + h⊙c₃``; the backward returns that
    sum directly as the input gradient (``yields_relevance``).
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

    def propagation(self, x: Tensor) -> tuple[Tensor, Scales, Backward]:
        layer, weight = self.layer, self.layer.weight
        low = self.low.to(x.dtype).expand((1, *x.shape[1:]))
        high = self.high.to(x.dtype).expand((1, *x.shape[1:]))
        linear = affine(layer, x, weight, None)
        y = linear if layer.bias is None else linear + broadcast(layer, layer.bias.to(linear.dtype), linear)
        z = linear - (affine(layer, low, self.w_pos, None) + affine(layer, high, self.w_neg, None))
        plain, pos, neg = (adjoint(layer, w, x) for w in (weight, self.w_pos, self.w_neg))

        def backward(v: Sequence[Tensor]) -> Tensor:
            return x * plain(v[0]) - low * pos(v[0]) - high * neg(v[0])

        return y, (y / stabilize(z, self.stabilizer),), backward


