"""AttnLRP: LRP rules for transformers (Achtibat et al., ICML 2024), in the engine's gradient form.

Relevance at a tensor ``t`` is ``t ⊙ g_t`` with ``g_t`` the modified gradient (see :mod:`.rules`).
AttnLRP adds four rules to the ε rule on Linear/Conv layers; each is one modified gradient:

- **uniform rule** on a product of input-dependent tensors (``q @ kᵀ``, ``attention @ v``, a
  gated ``a * b``): the output's relevance is split in equal parts among the ``n`` dependent
  factors. For a multilinear map ``x ⊙ ∂y/∂x`` of every factor is the whole output, so the
  gradient reaching each factor is scaled by ``1/n`` (:func:`uniform_product`);
- **softmax** (Taylor at the softmax's own input, ``R_in = x ⊙ (R_out − s · ΣR_out)``): this is
  ``x ⊙ ∇`` with the plain softmax backward ``s ⊙ (g − Σ s⊙g)``, so it needs no wrapper;
- **identity rule** on LayerNorm/RMSNorm: the normalising factor ``σ`` is a constant
  (detached); what is left is linear (centering, scaling by ``w``, bias) and explained by its
  gradient (:class:`LayerNormRule`, :func:`layer_norm`);
- **identity rule** on element-wise activations (GELU, SiLU, …): ``R_in = R_out``, the Pass rule
  (:class:`.parameter_free_rules.Pass`, and :func:`identity_activation` for functional calls).

Attention runs in torch's fused kernel with the gradient reaching ``q`` and ``k`` scaled by ¼ and
``v`` by ½ (:func:`attention`), which is the uniform rule on both products: :class:`AttentionRule`
replaces ``nn.MultiheadAttention`` in the private LRP copy (its projections get the composite's
Linear rule), and ``F.scaled_dot_product_attention`` in the model's own forward code gets the same
treatment. Which operations of the forward code get which rule is decided by :class:`AttnLRPMode`, a
thread-local ``TorchFunctionMode`` the explainer runs the forward pass in when the model has attention,
normalisation or such operations (read from the data flow, :mod:`.dataflow`).
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .dependence import dependent
from .parameter_free_rules import modified_gradient

#: products: linear in each factor; the uniform rule when two or more factors depend on the input
PRODUCTS = {"matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "einsum", "mul", "__mul__", "__rmul__"}
#: element-wise activations called as functions (the identity rule)
FUNCTIONAL_ACTIVATIONS = {"gelu", "silu", "mish", "tanh", "sigmoid", "softplus", "elu", "selu", "celu",
                          "leaky_relu", "hardswish", "hardsigmoid", "relu6"}  # fmt: skip
#: normalisations called as functions (σ detached)
FUNCTIONAL_NORMS = {"layer_norm", "rms_norm"}
#: explained by their plain gradient: softmax (AttnLRP's Taylor rule) and Linear layers called as functions (ε → 0)
GRADIENT_OPS = {"softmax", "linear"}
ATTENTION = {"scaled_dot_product_attention"}


def _dependent_count(args: tuple, kwargs: dict) -> int:
    return len(dependent((args, kwargs)))


def explained_by_attnlrp(name: str, args: tuple, kwargs: dict) -> bool:
    """Forward-code operations :class:`AttnLRPMode` gives an AttnLRP rule (or whose gradient is that rule)."""
    if name in PRODUCTS:
        return True
    if name == "linear":  # F.linear(x, W, b) with constant W, b: the ε rule with ε → 0
        return _dependent_count(args[1:], kwargs) == 0
    return name in FUNCTIONAL_ACTIVATIONS | FUNCTIONAL_NORMS | GRADIENT_OPS | ATTENTION


class _ScaleGradient(torch.autograd.Function):
    """Forward: ``x``; backward: ``g · factor``."""

    @staticmethod
    def forward(ctx, x: Tensor, factor: float) -> Tensor:  # type: ignore[override]
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.factor, None


_local = threading.local()


def uniform_product(func, *args, **kwargs) -> Tensor:
    """``func(*args)`` (a product) with the uniform rule: each of its ``n`` input-dependent factors gets ``1/n``
    of the output's relevance (the gradient reaching the factors is scaled by ``1/n``)."""
    n = _dependent_count(args, kwargs)
    _local.inside = getattr(_local, "inside", 0) + 1  # an enclosing AttnLRPMode must not apply the rule again
    try:
        out = func(*args, **kwargs)
    finally:
        _local.inside -= 1
    return _ScaleGradient.apply(out, 1.0 / n) if n > 1 else out


def identity_activation(func, x: Tensor, *args, **kwargs) -> Tensor:
    """``func(x, …)`` (element-wise) with the identity rule ``R_in = R_out``: ``g_in = func(x) ⊘ x · g_out``."""
    with torch.no_grad():
        a = func(x, *args, **kwargs)
        ratio = torch.where(x != 0, a / torch.where(x != 0, x, 1), 0)
    return modified_gradient(a, (x, ratio))


def layer_norm(x: Tensor, normalized_shape, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """``F.layer_norm`` with the identity rule on the normalisation: ``(x − μ) / [σ]_cst · w + b``."""
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    centered = x - x.mean(dims, keepdim=True)
    with torch.no_grad():
        scale = torch.rsqrt(centered.pow(2).mean(dims, keepdim=True) + eps)
    y = centered * scale
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


def rms_norm(x: Tensor, normalized_shape, weight: Tensor | None = None, eps: float | None = None) -> Tensor:
    """``F.rms_norm`` with the identity rule on the normalisation: ``x / [rms(x)]_cst · w``."""
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    with torch.no_grad():
        scale = torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + eps)
    y = x * scale
    return y * weight if weight is not None else y


def attention(q: Tensor, k: Tensor, v: Tensor, *args, **kwargs) -> Tensor:
    """``F.scaled_dot_product_attention(q, k, v, …)`` with the uniform rule on both of its products.

    The uniform rule halves the gradient reaching each factor of ``q @ kᵀ`` and of
    ``softmax(·) @ v``; backpropagation is linear in the incoming gradient, so that is the same as
    scaling the gradient reaching ``q`` and ``k`` by ¼ and ``v`` by ½ (what lxt does), and the fused
    kernel itself runs unchanged (flash or memory-efficient attention on GPU). The softmax between
    keeps its gradient, which is AttnLRP's rule for it."""
    q, k, v = _ScaleGradient.apply(q, 0.25), _ScaleGradient.apply(k, 0.25), _ScaleGradient.apply(v, 0.5)
    _local.inside = getattr(_local, "inside", 0) + 1  # an enclosing AttnLRPMode must not apply the rule again
    try:
        return F.scaled_dot_product_attention(q, k, v, *args, **kwargs)
    finally:
        _local.inside -= 1


def _replacement(name: str, func, args: tuple, kwargs: dict):
    """The AttnLRP version of forward-code operation ``func`` (``None``: run it as it is)."""
    if name in PRODUCTS:
        return uniform_product(func, *args, **kwargs) if _dependent_count(args, kwargs) > 1 else None
    if name in ATTENTION:
        return attention(*args, **kwargs)
    if name in FUNCTIONAL_NORMS:
        return (layer_norm if name == "layer_norm" else rms_norm)(*args, **kwargs)
    if name in FUNCTIONAL_ACTIVATIONS:  # out of place: the rule reads the input after the activation ran
        if kwargs.get("inplace"):
            kwargs = {**kwargs, "inplace": False}
        elif len(args) > 1 and args[-1] is True:  # ``inplace`` is the last positional parameter of these
            args = (*args[:-1], False)
        return identity_activation(func, *args, **kwargs)
    return None


class AttnLRPMode(TorchFunctionMode):
    """Runs forward code with AttnLRP's rules (see the module docstring).

    Only operations with gradient enabled are rewritten: the rules' own computations (under
    ``no_grad`` or inside autograd functions) run as they are, and so does everything whose plain
    gradient is already the rule (reshapes, sums, softmax, products with one dependent factor).
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if torch.is_grad_enabled() and not getattr(_local, "inside", 0):
            name = getattr(func, "__name__", "")
            if name in PRODUCTS or name in ATTENTION or name in FUNCTIONAL_NORMS or name in FUNCTIONAL_ACTIVATIONS:
                out = _replacement(name, func, args, kwargs)
                if out is not None:
                    return out
        return func(*args, **kwargs)


class LayerNormRule(nn.Module):
    """``nn.LayerNorm``/``nn.RMSNorm`` with the identity rule on its normalisation (σ detached)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def __getattr__(self, name: str):
        """The norm's own attributes (``normalized_shape``, ``weight``, …), for forward code that reads them."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["module"], name)

    def forward(self, x: Tensor) -> Tensor:
        m = self.module
        if isinstance(m, nn.LayerNorm):
            return layer_norm(x, m.normalized_shape, m.weight, m.bias, m.eps)
        return rms_norm(x, m.normalized_shape, m.weight, m.eps)


def _frozen_linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    """An nn.Linear whose parameters are ``weight`` and ``bias`` themselves (views: no copy), frozen."""
    layer = nn.Linear(1, 1, bias=bias is not None, device="meta")
    layer.in_features, layer.out_features = weight.shape[1], weight.shape[0]
    layer.weight = nn.Parameter(weight.detach(), requires_grad=False)
    layer.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
    return layer


class AttentionRule(nn.Module):
    """``nn.MultiheadAttention`` as explicit forward code: its q/k/v and output projections under the
    composite's Linear rule, the attention itself by :func:`attention` (uniform rule on both products,
    the softmax's gradient). Masks (``attn_mask``, ``key_padding_mask``,
    ``is_causal``) are applied as the module does; dropout is not (eval mode). With
    ``need_weights`` the attention weights (averaged over heads unless told otherwise) come back
    detached: they are an output to look at, not a path relevance takes."""

    def __init__(self, module: nn.MultiheadAttention, linear_rule) -> None:
        super().__init__()
        self.module = module  # its parameters, which the projections below share, and attributes forward code reads
        e = module.embed_dim
        self.heads = module.num_heads
        self.batch_first = module.batch_first
        bias = module.in_proj_bias
        slices = [None, None, None] if bias is None else [bias[i * e:(i + 1) * e] for i in range(3)]
        if module._qkv_same_embed_dim:
            weights = [module.in_proj_weight[i * e:(i + 1) * e] for i in range(3)]
            self.in_proj = linear_rule(_frozen_linear(module.in_proj_weight, bias))  # self-attention: one product
        else:
            weights = [module.q_proj_weight, module.k_proj_weight, module.v_proj_weight]
            self.in_proj = None
        self.q_proj, self.k_proj, self.v_proj = (linear_rule(_frozen_linear(w, b)) for w, b in zip(weights, slices))
        self.out_proj = linear_rule(module.out_proj)

    def __getattr__(self, name: str):
        """The attention module's own attributes (``batch_first``, ``in_proj_bias``, …), for forward code that
        reads them (``nn.TransformerEncoderLayer`` checks them for its fast path)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["module"], name)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if not self.batch_first:  # (L, N, E) → (N, L, E)
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        if self.in_proj is not None and query is key and key is value:
            q, k, v = self.in_proj(query).chunk(3, dim=-1)
        else:
            q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(value)
        n, length, e = q.shape
        source = k.shape[1]
        q, k, v = (t.reshape(n, t.shape[1], self.heads, e // self.heads).transpose(1, 2) for t in (q, k, v))
        mask = _additive_mask(attn_mask, key_padding_mask, n, self.heads, length, source, q.dtype, q.device)
        if is_causal and attn_mask is None:
            causal = torch.full((length, source), float("-inf"), dtype=q.dtype, device=q.device).triu(1)
            mask = causal if mask is None else mask + causal
        out = attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(n, length, e)
        out = self.out_proj(out)
        if not self.batch_first:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(1)
        if not need_weights:
            return out, None
        with torch.no_grad():  # the weights to look at; relevance does not flow through them
            scores = q @ k.transpose(-2, -1) / math.sqrt(e // self.heads)
            shown = torch.softmax(scores if mask is None else scores + mask, dim=-1)
        shown = shown.mean(1) if average_attn_weights else shown
        return out, shown.squeeze(0) if unbatched else shown


def _additive_mask(attn_mask: Tensor | None, key_padding_mask: Tensor | None, n: int, heads: int, length: int,
                   source: int, dtype: torch.dtype, device) -> Tensor | None:
    """``attn_mask`` ((L, S) or (N·H, L, S)) and ``key_padding_mask`` ((N, S)) as one additive (N, H, L, S) mask."""
    def additive(mask: Tensor) -> Tensor:
        if mask.dtype == torch.bool:
            return torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(mask, float("-inf"))
        return mask.to(dtype)

    total = None
    if attn_mask is not None:
        m = additive(attn_mask)
        total = m.view(n, heads, length, source) if m.dim() == 3 else m
    if key_padding_mask is not None:
        m = additive(key_padding_mask).view(n, 1, 1, source)
        total = m if total is None else total + m
    return total
