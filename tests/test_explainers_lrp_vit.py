"""LRP through Vision Transformers with the AttnLRP rules (explainers/attention_rules.py).

The reference is written independently of the engine, in the way lxt's efficient AttnLRP works:
one forward pass of a hand-written ViT in which every rule is a detach trick (LayerNorm's σ
detached, ``x · [gelu(x)/x]_cst``, products ``½(a·[b]_cst + [a]_cst·b)``), then ``x ⊙ ∇x``.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unhans.explainers.errors import UnsupportedModelError
from unhans.explainers.lrp import LRP
from unhans.pipeline.small_vit import EncoderBlock, SmallViT


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights at the scale of a trained model (torchvision zero-initialises the head)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("ln.weight") or ".ln_" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p)) if name.endswith("weight") else p.normal_(0, 0.2)
            elif p.dim() > 1:
                p.normal_(0, 1 / math.sqrt(p[0].numel()))
            else:
                p.normal_(0, 0.1)
    return model.eval()


# --- the reference: AttnLRP by detach tricks on a hand-written forward pass of SmallViT ---

def _layer_norm(x, norm: nn.LayerNorm):
    mean = x.mean(-1, keepdim=True)
    std = torch.sqrt(((x - mean) ** 2).mean(-1, keepdim=True) + norm.eps).detach()
    return (x - mean) / std * norm.weight + norm.bias


def _uniform(a, b):
    return 0.5 * (a @ b.detach()) + 0.5 * (a.detach() @ b)


def _identity(f, x):
    return x * (f(x) / x).detach()


def _attention(h, mha: nn.MultiheadAttention):
    n, t, e = h.shape
    heads = mha.num_heads
    q, k, v = F.linear(h, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (z.reshape(n, t, heads, e // heads).transpose(1, 2) for z in (q, k, v))
    scores = _uniform(q, k.transpose(-2, -1)) / math.sqrt(e // heads)
    out = _uniform(torch.softmax(scores, -1), v).transpose(1, 2).reshape(n, t, e)
    return mha.out_proj(out)


def reference_relevance(model: SmallViT, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    h = model.patch_embedding(x).flatten(2).transpose(1, 2)
    h = torch.cat([model.class_token.expand(len(h), -1, -1), h], 1) + model.position
    for block in model.blocks:
        h = h + _attention(_layer_norm(h, block.norm1), block.attention)
        a = block.mlp[0](_layer_norm(h, block.norm2))
        h = h + block.mlp[2](_identity(F.gelu, a))
    logits = model.head(_layer_norm(h[:, 0], model.norm))
    target = logits.argmax(1)
    logits.gather(1, target[:, None]).sum().backward()
    return (x * x.grad).detach(), target


@pytest.fixture(scope="module")
def vit():
    return trained_like(SmallViT(in_channels=1, num_classes=10, image_size=32))


def test_small_vit_agrees_with_the_detach_trick_reference(vit):
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    expected, target = reference_relevance(vit, x)
    # the reference's Linear layers pass the plain gradient (ε = 0); the engine's ε rule with a negligible ε
    explanation = LRP(vit, "epsilon", epsilon=1e-9).explain(x)
    assert torch.equal(explanation.target, target)
    assert relative_l2(explanation.relevance, expected) <= 1e-4
    # in float64 the rules agree to rounding: the difference is ε alone, not a rule
    wide = copy.deepcopy(vit).double()
    expected, _ = reference_relevance(wide, x.double())
    assert relative_l2(LRP(wide, "epsilon", epsilon=1e-12).explain(x.double()).relevance, expected) <= 1e-7
    with torch.no_grad():
        torch.testing.assert_close(explanation.logits, vit(x), rtol=1e-4, atol=1e-5)


class ExplicitAttention(nn.Module):
    """The same attention as nn.MultiheadAttention, written out in forward code (q/k/v linears, @, softmax)."""

    def __init__(self, mha: nn.MultiheadAttention, fused: bool) -> None:
        super().__init__()
        e = mha.embed_dim
        self.heads, self.fused = mha.num_heads, fused
        self.q, self.k, self.v = (nn.Linear(e, e) for _ in range(3))
        with torch.no_grad():
            for i, layer in enumerate((self.q, self.k, self.v)):
                layer.weight.copy_(mha.in_proj_weight[i * e:(i + 1) * e])
                layer.bias.copy_(mha.in_proj_bias[i * e:(i + 1) * e])
        self.out = copy.deepcopy(mha.out_proj)

    def forward(self, h):
        n, t, e = h.shape
        q, k, v = (z(h).reshape(n, t, self.heads, e // self.heads).transpose(1, 2) for z in (self.q, self.k, self.v))
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(e // self.heads), dim=-1) @ v
        return self.out(out.transpose(1, 2).reshape(n, t, e))


class FunctionalBlock(nn.Module):
    """A block whose norms and activation are functional calls, with the attention written out."""

    def __init__(self, block: EncoderBlock, fused: bool) -> None:
        super().__init__()
        self.attention = ExplicitAttention(block.attention, fused)
        self.norm1, self.norm2 = block.norm1, block.norm2
        self.fc1, self.fc2 = block.mlp[0], block.mlp[2]

    def forward(self, x):
        h = F.layer_norm(x, self.norm1.normalized_shape, self.norm1.weight, self.norm1.bias, self.norm1.eps)
        x = x + self.attention(h)
        h = F.layer_norm(x, self.norm2.normalized_shape, self.norm2.weight, self.norm2.bias, self.norm2.eps)
        return x + self.fc2(F.gelu(self.fc1(h)))


@pytest.mark.parametrize("fused", [False, True], ids=["matmul-softmax", "scaled_dot_product_attention"])
def test_attention_written_in_forward_code_gets_the_same_rules(vit, fused):
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    functional = copy.deepcopy(vit)
    functional.blocks = nn.Sequential(*[FunctionalBlock(b, fused) for b in functional.blocks])
    with torch.no_grad():
        torch.testing.assert_close(functional(x), vit(x), rtol=1e-4, atol=1e-5)
    expected = LRP(vit, "epsilon").explain(x).relevance
    got = LRP(functional, "epsilon").explain(x).relevance
    assert relative_l2(got, expected) <= 1e-4


def test_the_users_model_is_not_modified(vit):
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    LRP(vit).explain(torch.randn(3, 1, 32, 32))
    assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items())
    assert isinstance(vit.blocks[0].attention, nn.MultiheadAttention) and isinstance(vit.norm, nn.LayerNorm)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in vit.modules())


class Around(nn.Module):
    """``after(model(before(x)))``: forward code around a supported model."""

    def __init__(self, model, before=lambda x: x, after=lambda y: y):
        super().__init__()
        self.model, self.before, self.after = model, before, after

    def forward(self, x):
        return self.after(self.model(self.before(x)))


def test_a_vit_with_an_operation_without_rule_is_refused_not_half_explained(vit):
    with pytest.raises(UnsupportedModelError, match=r"functional exp"):
        LRP(Around(vit, before=lambda x: torch.exp(x) - 1))(torch.randn(2, 1, 32, 32), torch.zeros(2, dtype=torch.long))
    decoder = nn.TransformerDecoderLayer(64, 4, batch_first=True)  # torch forward code not vetted: refused
    with pytest.raises(UnsupportedModelError, match=r"TransformerDecoderLayer"):
        LRP(nn.Sequential(nn.Linear(8, 64), decoder, nn.Flatten(), nn.Linear(64 * 5, 2)))


def test_softmax_of_the_model_output_is_still_refused(vit):
    with pytest.raises(UnsupportedModelError, match="softmax on the model output"):
        LRP(Around(vit, after=lambda logits: torch.softmax(logits, dim=1)))(torch.randn(2, 1, 32, 32), torch.zeros(2, dtype=torch.long))


def test_masks_of_multihead_attention_are_applied_as_torch_does():
    torch.manual_seed(3)
    mha = trained_like(nn.MultiheadAttention(16, 2))  # sequence first, separate masks

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(4, 16)
            self.mha = mha
            self.head = nn.Linear(16, 3)

        def forward(self, x):  # x: (B, T, 4)
            h = self.embed(x).transpose(0, 1)
            pad = torch.zeros(x.shape[0], x.shape[1], dtype=torch.bool)
            pad[:, -1] = True
            causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
            out, _ = self.mha(h, h, h, key_padding_mask=pad, attn_mask=causal, need_weights=False)
            return self.head(out.mean(0))

    model = trained_like(Masked())
    x = torch.randn(3, 6, 4)
    explanation = LRP(model, "epsilon").explain(x)
    with torch.no_grad():
        torch.testing.assert_close(explanation.logits, model(x), rtol=1e-4, atol=1e-5)
    assert torch.isfinite(explanation.relevance).all()
    assert explanation.relevance[:, -1].abs().sum() > 0  # the padded key still reads its own query


def test_torchvision_vit_b_16_is_explained():
    torchvision = pytest.importorskip("torchvision")
    model = trained_like(torchvision.models.vit_b_16(weights=None, image_size=64))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    explanation = LRP(model, "epsilon").explain(x)
    with torch.no_grad():
        torch.testing.assert_close(explanation.logits, model(x), rtol=1e-3, atol=1e-4)
    assert explanation.relevance.shape == x.shape and torch.isfinite(explanation.relevance).all()


@pytest.mark.parametrize("name", ["convnext_tiny", "swin_t"])
def test_convnext_and_swin_come_along(name):
    """ConvNeXt's LayerNorm2d (permute, F.layer_norm, permute) and Swin's shifted-window attention (roll,
    F.linear with the layer's weights, q @ kᵀ + relative position bias, softmax, @ v) are forward code with rules."""
    torchvision = pytest.importorskip("torchvision")
    model = trained_like(getattr(torchvision.models, name)(weights=None))
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    explanation = LRP(model, "epsilon").explain(x)
    with torch.no_grad():
        torch.testing.assert_close(explanation.logits, model(x), rtol=1e-3, atol=1e-4)
    assert torch.isfinite(explanation.relevance).all() and explanation.relevance.abs().sum() > 0


def test_torch_transformer_encoder_layers_get_the_same_rules(vit):
    """nn.TransformerEncoder(Layer) is forward code over supported parts: the same blocks built from it explain
    exactly as the hand-written ones."""
    layers = []
    for block in vit.blocks:
        layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        layer.self_attn, layer.norm1, layer.norm2 = (copy.deepcopy(m) for m in (block.attention, block.norm1,
                                                                                 block.norm2))
        layer.linear1, layer.linear2 = copy.deepcopy(block.mlp[0]), copy.deepcopy(block.mlp[2])
        layers.append(layer)
    torch_blocks = copy.deepcopy(vit)
    torch_blocks.blocks = nn.TransformerEncoder(layers[0], num_layers=len(layers), enable_nested_tensor=False)
    torch_blocks.blocks.layers = nn.ModuleList(layers)
    torch_blocks.eval()
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(torch_blocks(x), vit(x), rtol=1e-4, atol=1e-5)
    expected = LRP(vit, "epsilon").explain(x).relevance
    assert relative_l2(LRP(torch_blocks, "epsilon").explain(x).relevance, expected) <= 1e-4
