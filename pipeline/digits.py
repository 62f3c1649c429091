"""The embedded default dataset: scikit-learn's bundled handwritten digits, with defects.

Real handwriting (1797 images, 8x8, 16 grey levels) shipped with scikit-learn, so no
download. Scaled to [0, 1], upsampled to ``image_size`` (bilinear), split stratified and
deterministically; then a corner tag and label noise are injected into the training set.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import DatasetConfig
from .defects import flip_labels, plant_artifact

NUM_CLASSES = 10
CLASS_NAMES = [str(d) for d in range(NUM_CLASSES)]


@dataclass
class LabeledImages:
    """Images (N, C, H, W) float32 in [0, 1] with their given labels and ground truth.

    ``true_labels``, ``tagged`` and ``flipped`` are ground truth for evaluation only.
    """

    images: np.ndarray
    labels: np.ndarray
    true_labels: np.ndarray
    tagged: np.ndarray
    flipped: np.ndarray


@dataclass
class DigitsDataset:
    train: LabeledImages
    test: LabeledImages
    class_names: list[str]


def _upsample(images: np.ndarray, size: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(images[:, None].astype(np.float32))
    up = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return up.clamp_(0.0, 1.0).numpy()


def load_digits_dataset(config: DatasetConfig) -> DigitsDataset:
    """Build the digits dataset with the defects of ``config`` (deterministic in its seed)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    images = _upsample(raw.images / 16.0, config.image_size)
    labels = raw.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=config.test_fraction, stratify=labels,
        random_state=config.seed,
    )
    train_idx.sort()
    test_idx.sort()
    artifact_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(2))

    x_train = images[train_idx].copy()
    y_true = labels[train_idx]
    tagged = np.zeros(len(x_train), dtype=bool)
    for artifact in config.artifacts:
        tagged |= plant_artifact(x_train, y_true, artifact.class_, artifact.fraction, artifact_rng, kind=artifact.kind,
                                 corner=artifact.corner, edge=artifact.edge)
    y_noisy = flip_labels(y_true, config.label_noise.rate, config.label_noise.kind, NUM_CLASSES, noise_rng)
    train = LabeledImages(x_train, y_noisy, y_true, tagged, y_noisy != y_true)
    y_test = labels[test_idx]
    n_test = len(test_idx)
    test = LabeledImages(images[test_idx].copy(), y_test, y_test, np.zeros(n_test, bool), np.zeros(n_test, bool))
    return DigitsDataset(train=train, test=test, class_names=CLASS_NAMES)
