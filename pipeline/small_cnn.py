"""The small CNN the audit trains on the embedded dataset: conv/ReLU/max-pool blocks, two linear layers."""
from __future__ import annotations

import torch.nn as nn


def small_cnn(in_channels: int = 1, num_classes: int = 10, image_size: int = 32, width: int = 16) -> nn.Sequential:
    """Three conv(3x3)/ReLU/max-pool(2) blocks (width, 2*width, 4*width channels), then
    Linear(→64)/ReLU/Linear(→num_classes). Plain layers only, so every LRP rule applies."""
    spatial = image_size // 8
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * width * spatial * spatial, 64), nn.ReLU(),
        nn.Linear(64, num_classes),
    )
