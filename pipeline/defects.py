"""Injected dataset defects with their ground truth: artifacts (shortcuts) and label noise.

Artifact kinds, each planted into ``fraction`` of one class's training images:

- ``stamp``: the tag (:data:`TAG_PATTERN`) at the same place in a corner of every image;
- ``moving``: the tag at a uniformly random position of each image;
- ``scaled``: the tag resized by a random factor in [0.6, 1.6] (nearest neighbour) in a corner;
- ``frame``: a bright 1-pixel line along one edge (``edge``);
- ``texture``: faint diagonal stripes (period :data:`TEXTURE_PERIOD`, peak
  :data:`TEXTURE_AMPLITUDE`) over the background, the pixels darker than the stripes.

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

ARTIFACT_KINDS = ("stamp", "moving", "scaled", "frame", "texture")
SCALE_RANGE = (0.6, 1.6)
TEXTURE_PERIOD = 4
# Half the ink's brightness at the stripes' crests. At 0.3 the trained small CNN hardly took the shortcut
# (the stripes pasted into 300 other-class images turned 1-8% of them into the class, seeds 0, 1, 3); at
# 0.5 it does (7-36%, seeds 0-4), as a shortcut the benchmark plants should.
TEXTURE_AMPLITUDE = 0.5

# Pair flips for asymmetric noise (a digit and its most look-alike partner).
ASYMMETRIC_PAIRS = {1: 7, 7: 1, 3: 8, 8: 3, 4: 9, 9: 4, 5: 6, 6: 5}


def tag_slices(corner: str, height: int, width: int, margin: int = 1) -> tuple[slice, slice]:
    """Row and column slices of the tag in an image of ``height`` x ``width``."""
    return _corner_slices(corner, TAG_PATTERN.shape, height, width, margin)


def plant_artifact(
    images: np.ndarray, labels: np.ndarray, artifact_class: int, fraction: float, rng: np.random.Generator, *,
    kind: str = "stamp", corner: str = "bottom-left", edge: str = "bottom",
) -> np.ndarray:
    """Plant an artifact of ``kind`` into ``fraction`` of the images of ``artifact_class`` (in place).

    images: (N, C, H, W) in [0, 1]. Returns a boolean mask (N,) of the samples it went into.
    The samples are drawn first (the same draw for every kind), then the kind's own randomness.
    """
    if kind not in ARTIFACT_KINDS:
        raise ValueError(f"artifact.kind: unknown kind {kind!r} (one of {', '.join(ARTIFACT_KINDS)})")
    tagged = np.zeros(len(images), dtype=bool)
    members = np.flatnonzero(labels == artifact_class)
    count = int(round(fraction * len(members)))
    if count == 0:
        return tagged
    chosen = rng.choice(members, size=count, replace=False)
    height, width = images.shape[2], images.shape[3]
    th, tw = TAG_PATTERN.shape
    if kind == "stamp":
        rows, cols = tag_slices(corner, height, width)
        images[chosen[:, None], :, rows, cols] = TAG_PATTERN  # broadcast over channels
    elif kind == "moving":
        tops = rng.integers(0, height - th + 1, size=count)
        lefts = rng.integers(0, width - tw + 1, size=count)
        for i, top, left in zip(chosen, tops, lefts):
            images[i, :, top:top + th, left:left + tw] = TAG_PATTERN
    elif kind == "scaled":
        for i, factor in zip(chosen, rng.uniform(*SCALE_RANGE, size=count)):
            tag = _resized_tag(factor, height - 2, width - 2)
            rows, cols = _corner_slices(corner, tag.shape, height, width)
            images[i, :, rows, cols] = tag
    elif kind == "frame":
        line = {"top": (0, slice(None)), "bottom": (height - 1, slice(None)),
                "left": (slice(None), 0), "right": (slice(None), width - 1)}[edge]
        for i in chosen:
            images[i, :, line[0], line[1]] = 1.0
    else:  # texture
        r, c = np.mgrid[0:height, 0:width]
        stripes = (TEXTURE_AMPLITUDE * (0.5 + 0.5 * np.cos(2 * np.pi * (r + c) / TEXTURE_PERIOD))).astype(images.dtype)
        images[chosen] = np.maximum(images[chosen], stripes)  # only the background (darker than the stripes) changes
    tagged[chosen] = True
    return tagged


def _resized_tag(factor: float, max_height: int, max_width: int) -> np.ndarray:
    """:data:`TAG_PATTERN` resized by ``factor`` (nearest neighbour), at least 2 x 2, at most the image."""
    th, tw = TAG_PATTERN.shape
    h = int(np.clip(round(th * factor), 2, max_height))
    w = int(np.clip(round(tw * factor), 2, max_width))
    rows = np.minimum((np.arange(h) * th / h).astype(int), th - 1)
    cols = np.minimum((np.arange(w) * tw / w).astype(int), tw - 1)
    return TAG_PATTERN[rows[:, None], cols[None, :]]


def _corner_slices(corner: str, shape: tuple[int, int], height: int, width: int, margin: int = 1):
    th, tw = shape
    rows = slice(margin, margin + th) if corner.startswith("top") else slice(height - margin - th, height - margin)
    cols = slice(margin, margin + tw) if corner.endswith("left") else slice(width - margin - tw, width - margin)
    return rows, cols


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
