"""Injected dataset defects with their ground truth: a corner artifact and label noise.

The ground truth (which samples were tagged, which labels were flipped) is kept
beside the data for evaluation only; no detector ever reads it.
"""
from __future__ import annotations

import numpy as np

# A 4x7 "copyright tag": a framed glyph, fixed for every run.
TAG_PATTERN = np.array(
    [
        [1, 1, 1, 1, 1, 1, 1],
        [1, 0, 1, 0, 1, 0, 1],
        [1, 0, 0, 1, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 1],
    ],
    dtype=np.float32,
)

# Pair flips for asymmetric noise (a digit and its most look-alike partner).
ASYMMETRIC_PAIRS = {1: 7, 7: 1, 3: 8, 8: 3, 4: 9, 9: 4, 5: 6, 6: 5}


def tag_slices(corner: str, height: int, width: int, margin: int = 1) -> tuple[slice, slice]:
    """Row and column slices of the tag in an image of ``height`` x ``width``."""
    th, tw = TAG_PATTERN.shape
    top = corner.startswith("top")
    left = corner.endswith("left")
    rows = slice(margin, margin + th) if top else slice(height - margin - th, height - margin)
    cols = slice(margin, margin + tw) if left else slice(width - margin - tw, width - margin)
    return rows, cols


def stamp_artifact(
    images: np.ndarray, labels: np.ndarray, artifact_class: int, fraction: float, corner: str,
    rng: np.random.Generator,
) -> np.ndarray:
    """Stamp the tag into ``fraction`` of the images of ``artifact_class`` (in place).

    images: (N, C, H, W) in [0, 1]. Returns a boolean mask (N,) of tagged samples.
    """
    tagged = np.zeros(len(images), dtype=bool)
    members = np.flatnonzero(labels == artifact_class)
    count = int(round(fraction * len(members)))
    if count == 0:
        return tagged
    chosen = rng.choice(members, size=count, replace=False)
    rows, cols = tag_slices(corner, images.shape[2], images.shape[3])
    images[chosen[:, None], :, rows, cols] = TAG_PATTERN  # broadcast over channels
    tagged[chosen] = True
    return tagged


def flip_labels(
    labels: np.ndarray, rate: float, kind: str, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """Noisy copy of ``labels``.

    symmetric: exactly round(rate * N) samples, chosen uniformly, move to a uniformly random
    other class. asymmetric: in every class that has a partner in :data:`ASYMMETRIC_PAIRS`,
    exactly round(rate * n_class) samples move to the partner (classes 0 and 2 stay clean).
    """
    noisy = labels.copy()
    if rate <= 0:
        return noisy
    if kind == "symmetric":
        chosen = rng.choice(len(labels), size=int(round(rate * len(labels))), replace=False)
        shift = rng.integers(1, num_classes, size=len(chosen))
        noisy[chosen] = (labels[chosen] + shift) % num_classes
    elif kind == "asymmetric":
        for source, target in sorted(ASYMMETRIC_PAIRS.items()):
            members = np.flatnonzero(labels == source)
            chosen = rng.choice(members, size=int(round(rate * len(members))), replace=False)
            noisy[chosen] = target
    else:
        raise ValueError(f"label_noise.kind: unknown kind {kind!r}")
    return noisy
