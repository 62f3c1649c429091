"""Samples as planes (C, H, W) for the dataset-level stages: SpRAy, the Clever-Hans search, the report.

Images are planes already. A multivariate time series, a sample of shape (features, time), is
read as one plane of F rows × T columns: its heatmap is an F × T map, a shortcut in it (a spike
at a fixed step of one feature, a box) is a pattern in that plane, and a thumbnail shows it as
an image. The model still receives (features, time): :meth:`SamplePlanes.model_input`.
"""
from __future__ import annotations

import numpy as np


def is_series(sample_shape) -> bool:
    """A sample of shape (features, time): a time series, not an image (C, H, W)."""
    return len(tuple(sample_shape)) == 2


class SamplePlanes:
    """Array-like access to samples as planes: ``planes[ids]`` → float32 (n, C, H, W).

    images: :class:`unhans.pipeline.sources.SampleImages` (or any array-like of samples).
    """

    def __init__(self, images):
        self.images = images
        self.sample_shape = tuple(images.shape[1:])
        self.series = is_series(self.sample_shape)
        self.shape = (images.shape[0], 1, *self.sample_shape) if self.series else tuple(images.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        out = np.asarray(self.images[key], dtype=np.float32)
        if not self.series:
            return out
        return out[None] if np.isscalar(key) else out[:, None]

    def model_input(self, planes: np.ndarray) -> np.ndarray:
        """Planes (n, C, H, W) back in the model's layout (n, *sample_shape)."""
        return np.ascontiguousarray(np.asarray(planes).reshape(len(planes), *self.sample_shape))
