"""The small Vision Transformer the audit can train on the embedded dataset instead of the CNN
(``training.architecture: vit``): patch embedding by a strided convolution, a class token and
learned position embeddings, pre-norm encoder blocks of ``nn.MultiheadAttention`` and a GELU MLP,
a LayerNorm and a linear head on the class token. Plain torch layers only, so LRP explains it
with the AttnLRP rules (:mod:`unhans.explainers.attention_rules`)."""
from __future__ import annotations

import torch
from torch import nn


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``x + attention(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attention(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class SmallViT(nn.Module):
    """ViT for small images: ``(image_size / patch)²`` patch tokens plus a class token."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 32, patch: int = 4,
                 dim: int = 64, depth: int = 4, heads: int = 4, hidden: int = 128) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch size {patch}")
        tokens = (image_size // patch) ** 2
        self.patch_embedding = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(len(x), -1, -1), x], dim=1) + self.position
        x = self.blocks(x)
        return self.head(self.norm(x[:, 0]))


def small_vit(in_channels: int = 1, num_classes: int = 10, image_size: int = 32, patch: int = 4) -> SmallViT:
    """The embedded audit's ViT (a factory, as :func:`unhans.pipeline.small_cnn.small_cnn`)."""
    return SmallViT(in_channels=in_channels, num_classes=num_classes, image_size=image_size, patch=patch)
