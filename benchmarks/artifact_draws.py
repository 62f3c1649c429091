"""Randomized shortcut artifacts: one draw from a seed says what to plant, where, how strong and in whom.

Issue #27. A draw (:class:`ArtifactDraw`) is data: its kind (``image`` inputs (N, C, H, W) in a known
value range, or ``series`` inputs (N, F, T)), a family, a placement, the family's parameters, the
poisoned class, the fraction of that class that carries it (uniform in [0.2, 0.6]) and whether 10%
symmetric label noise comes with it. ``draw.apply(x, rng)`` paints the artifact on any batch with a
fresh generator (planting, and pasting into other classes for the use test); :func:`plant` makes the
poisoned data set with its ground truth (``tagged``; ``flipped``, never a tagged sample).

Image families (:data:`IMAGE_FAMILIES`): ``glyph`` (a random 3-8 px binary glyph), ``line`` (any
orientation, length and 1-3 px thickness, a quarter of them along an image edge), ``dots`` (3-12
isolated pixels), ``frame`` (1-2 px on 1-4 sides, each side whole or partial), ``texture`` (a
sinusoidal grating or a checker, period 2-8 px, any orientation, amplitude 0.2-0.5 of the range,
over the background or the whole input), ``cast`` (a per-channel offset of 0.15-0.4 of the range on
RGB inputs, a global one on grey inputs), ``region`` (a 6-14 px rectangle blurred with a 5 or 7 px
box filter or noised with a std of 0.3-0.5 of the range). Shapes move 60-100% of the way from the
local background towards the draw's colour (a corner of the RGB cube), or towards the far end of the
range on grey inputs and where that colour would not contrast; textures add towards the far end;
every value is clipped into the range. Placements: ``fixed`` (the same place in every sample),
``random`` (a new position or phase per sample), ``rescaled`` (the shape scaled by 0.6-1.6 per
sample, where that means anything).

Series families (:data:`SERIES_FAMILIES`; amplitudes in each feature's standard deviation, on 1-3
features): ``burst`` (a spike or a bump of width 2-6 and height 1.5-4), ``level_shift`` (a constant
of 1-2.5 from a time to the end or over a window), ``periodic`` (a sinusoid of period 4 to T/4 and
amplitude 0.5-1.5), ``slope`` (a linear trend from a time, rising 1.5-4 by the end); at a fixed or a
random time (or phase).

    draw = draw_artifact(seed=7, kind="image", shape=(1, 32, 32), num_classes=10)
    planted = plant(draw, images, labels, np.random.default_rng(7))
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple

import numpy as np

KINDS = ("image", "series")
FRACTION_RANGE = (0.2, 0.6)
SCALE_RANGE = (0.6, 1.6)
LABEL_NOISE_RATE = 0.1


class Family(NamedTuple):
    """How to draw a family's parameters, the placements it knows, and how to apply it to a batch."""

    draw: Callable[[np.random.Generator, dict], dict]  # (rng, context) -> params (plain JSON data)
    placements: tuple[str, ...]
    apply: Callable[[np.ndarray, dict, str, np.random.Generator], np.ndarray]  # (x copy, params, placement, rng)


# ------------------------------------------------------------------------------------------- helpers


def _plain(value):
    """numpy scalars and arrays to JSON-able Python values, recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _resize(pattern: np.ndarray, factor: float) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D pattern by ``factor`` (at least 2 x 2)."""
    h, w = pattern.shape
    nh, nw = max(2, round(h * factor)), max(2, round(w * factor))
    return pattern[np.minimum((np.arange(nh) * h / nh).astype(int), h - 1)[:, None],
                   np.minimum((np.arange(nw) * w / nw).astype(int), w - 1)[None, :]]


def _place(pattern: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """A (height, width) bool mask with ``pattern`` at (top, left), shifted inside the image."""
    ph, pw = min(pattern.shape[0], height), min(pattern.shape[1], width)
    top, left = int(np.clip(top, 0, height - ph)), int(np.clip(left, 0, width - pw))
    mask = np.zeros((height, width), bool)
    mask[top:top + ph, left:left + pw] = pattern[:ph, :pw].astype(bool)
    return mask


def _segment(r0: float, c0: float, r1: float, c1: float, thickness: float, height: int, width: int) -> np.ndarray:
    """Pixels whose centre lies within thickness / 2 of the segment (r0, c0)-(r1, c1)."""
    r, c = np.mgrid[0:height, 0:width].astype(np.float64)
    dr, dc = r1 - r0, c1 - c0
    t = np.clip(((r - r0) * dr + (c - c0) * dc) / max(dr * dr + dc * dc, 1e-9), 0, 1)
    return np.hypot(r - r0 - t * dr, c - c0 - t * dc) <= thickness / 2


def _paint(mask_of: Callable[[dict, str, np.random.Generator], np.ndarray]):
    """A shape family's ``apply``: each sample's mask (``mask_of``) painted at a contrasting level.

    Each channel moves ``params['level']`` of the way from the background's mean under the mask
    towards the draw's colour (``params['colour']``, a corner of the RGB cube: the same colour in
    every sample); on grey inputs, or where that colour is within a quarter of the range of the
    background, towards the far end of the range instead (the top when the background is dark).
    """
    def apply(x: np.ndarray, p: dict, placement: str, rng: np.random.Generator) -> np.ndarray:
        lo, hi = p["range"]
        colour = None if p["colour"] is None else lo + np.asarray(p["colour"], x.dtype)[:, None] * (hi - lo)
        for i in range(len(x)):
            mask = mask_of(p, placement, rng)
            if not mask.any():
                continue
            background = x[i][:, mask].mean(axis=1, keepdims=True)  # (C, 1)
            far = colour
            if far is None or np.abs(far - background).mean() < (hi - lo) / 4:
                far = np.where(background < (lo + hi) / 2, hi, lo)
            x[i][:, mask] = background + p["level"] * (far - background)
        return x
    return apply


def _shape_context(rng: np.random.Generator, ctx: dict) -> dict:
    channels = ctx["shape"][0]
    colour = rng.integers(0, 2, channels) if channels == 3 else None
    return {"range": list(ctx["range"]), "level": rng.uniform(0.6, 1.0), "colour": colour}


# ------------------------------------------------------------------------------------ image families


def _draw_glyph(rng, ctx):
    h, w = rng.integers(3, 9, size=2)
    bits = rng.random((h, w)) < 0.5
    bits[0, 0], bits[-1, -1] = True, False  # never blank, never full
    _, height, width = ctx["shape"]
    return {**_shape_context(rng, ctx), "bits": bits.astype(int), "top": rng.integers(0, height - h + 1),
            "left": rng.integers(0, width - w + 1), "hw": [height, width]}


def _glyph_mask(p, placement, rng):
    bits, (height, width) = np.asarray(p["bits"]), p["hw"]
    top, left = p["top"], p["left"]
    if placement == "random":
        top, left = rng.integers(0, height - bits.shape[0] + 1), rng.integers(0, width - bits.shape[1] + 1)
    elif placement == "rescaled":  # scaled about the glyph's fixed centre
        scaled = _resize(bits, rng.uniform(*SCALE_RANGE))
        top, left = top + (bits.shape[0] - scaled.shape[0]) // 2, left + (bits.shape[1] - scaled.shape[1]) // 2
        bits = scaled
    return _place(bits, top, left, height, width)


def _draw_line(rng, ctx):
    _, height, width = ctx["shape"]
    thickness = int(rng.integers(1, 4))
    length = rng.uniform(5, max(height, width))
    if rng.random() < 0.25:  # along an edge, covering the outermost `thickness` rows or columns
        side = rng.integers(4)
        inset = (thickness - 1) / 2
        angle = 0.0 if side < 2 else np.pi / 2  # (row, col) direction (sin, cos)
        centre = ([inset, height - 1 - inset][side], rng.uniform(0, width - 1)) if side < 2 else \
            (rng.uniform(0, height - 1), [inset, width - 1 - inset][side - 2])
        edge = True
    else:
        angle, centre, edge = rng.uniform(0, np.pi), (rng.uniform(0, height - 1), rng.uniform(0, width - 1)), False
    return {**_shape_context(rng, ctx), "centre": centre, "angle": angle, "length": length,
            "thickness": thickness, "edge": edge, "hw": [height, width]}


def _line_mask(p, placement, rng):
    (height, width), (r, c) = p["hw"], p["centre"]
    direction = np.array([np.sin(p["angle"]), np.cos(p["angle"])])
    length = p["length"]
    if placement == "random":
        if p["edge"]:  # slides along its edge
            r, c = (r, rng.uniform(0, width - 1)) if p["angle"] == 0 else (rng.uniform(0, height - 1), c)
        else:
            r, c = rng.uniform(0, height - 1), rng.uniform(0, width - 1)
    elif placement == "rescaled":
        length *= rng.uniform(*SCALE_RANGE)
    (r0, c0), (r1, c1) = np.array([r, c]) - direction * length / 2, np.array([r, c]) + direction * length / 2
    return _segment(r0, c0, r1, c1, p["thickness"], height, width)


def _draw_dots(rng, ctx):
    _, height, width = ctx["shape"]
    count, points = int(rng.integers(3, 13)), []
    for flat in rng.permutation(height * width):  # isolated: no two dots touch, diagonals included
        point = divmod(int(flat), width)
        if all(max(abs(point[0] - a), abs(point[1] - b)) >= 2 for a, b in points):
            points.append(point)
        if len(points) == count:
            break
    return {**_shape_context(rng, ctx), "points": points, "hw": [height, width]}


def _dots_mask(p, placement, rng):
    (height, width), points = p["hw"], np.asarray(p["points"], float)
    if placement == "random":  # the same constellation, moved anywhere it fits
        low, high = points.min(0), points.max(0)
        points = points + [rng.uniform(-low[0], height - 1 - high[0]), rng.uniform(-low[1], width - 1 - high[1])]
    elif placement == "rescaled":
        centre = points.mean(0)
        points = centre + (points - centre) * rng.uniform(*SCALE_RANGE)
    rows = np.clip(np.round(points[:, 0]), 0, height - 1).astype(int)
    cols = np.clip(np.round(points[:, 1]), 0, width - 1).astype(int)
    mask = np.zeros((height, width), bool)
    mask[rows, cols] = True
    return mask


def _draw_frame(rng, ctx):
    _, height, width = ctx["shape"]
    segments = []
    for side in sorted(rng.choice(4, size=int(rng.integers(1, 5)), replace=False).tolist()):  # top, bottom, left, right
        n = width if side < 2 else height
        span = n if rng.random() < 0.5 else int(rng.integers(max(4, n * 2 // 5), n + 1))  # whole or partial
        segments.append([side, int(rng.integers(0, n - span + 1)), span])
    return {**_shape_context(rng, ctx), "segments": segments, "thickness": int(rng.integers(1, 3)),
            "hw": [height, width]}


def _frame_mask(p, placement, rng):
    (height, width), t = p["hw"], p["thickness"]
    mask = np.zeros((height, width), bool)
    for side, start, span in p["segments"]:
        along = slice(start, start + span)
        across = [slice(0, t), slice(height - t, height), slice(0, t), slice(width - t, width)][side]
        mask[(across, along) if side < 2 else (along, across)] = True
    return mask


def _draw_texture(rng, ctx):
    lo, hi = ctx["range"]
    return {"range": [lo, hi], "pattern": str(rng.choice(["grating", "checker"])), "period": rng.uniform(2, 8),
            "angle": rng.uniform(0, np.pi), "phase": rng.uniform(0, 1), "amplitude": rng.uniform(0.2, 0.5) * (hi - lo),
            "over": str(rng.choice(["background", "whole"])), "hw": list(ctx["shape"][1:])}


def _apply_texture(x, p, placement, rng):
    lo, hi = p["range"]
    r, c = np.mgrid[0:p["hw"][0], 0:p["hw"][1]].astype(np.float64)
    u, v = r * np.sin(p["angle"]) + c * np.cos(p["angle"]), r * np.cos(p["angle"]) - c * np.sin(p["angle"])
    for i in range(len(x)):
        period = p["period"] * (rng.uniform(*SCALE_RANGE) if placement == "rescaled" else 1.0)
        phase = rng.uniform(0, 1) if placement == "random" else p["phase"]
        if p["pattern"] == "grating":
            wave = 0.5 + 0.5 * np.cos(2 * np.pi * (u / period + phase))
        else:
            wave = ((np.floor(u / period + phase) + np.floor(v / period + phase)) % 2).astype(np.float64)
        grey = x[i].mean(0)
        region = grey <= np.median(grey) if p["over"] == "background" else np.ones_like(grey, bool)
        sign = 1.0 if x[i][:, region].mean() < (lo + hi) / 2 else -1.0  # towards the far end of the range
        x[i] += (sign * p["amplitude"] * wave * region)[None].astype(x.dtype)
    return x


def _draw_cast(rng, ctx):
    lo, hi = ctx["range"]
    channels = ctx["shape"][0] if ctx["shape"][0] == 3 else 1  # RGB: per channel; otherwise one global change
    offsets = rng.uniform(0.15, 0.4, channels) * rng.choice([-1.0, 1.0], channels) * (hi - lo)
    return {"range": [lo, hi], "offsets": offsets}


def _apply_cast(x, p, placement, rng):
    return x + np.asarray(p["offsets"], x.dtype)[None, :, None, None]


def _draw_region(rng, ctx):
    lo, hi = ctx["range"]
    _, height, width = ctx["shape"]
    h, w = (int(v) for v in rng.integers(6, 15, size=2))
    centre = (rng.uniform(height / 4, 3 * height / 4), rng.uniform(width / 4, 3 * width / 4))  # where the content is
    return {"range": [lo, hi], "mode": str(rng.choice(["blur", "noise"])), "size": [h, w], "centre": centre,
            "box": int(rng.choice([5, 7])), "noise_std": rng.uniform(0.3, 0.5) * (hi - lo), "hw": [height, width]}


def _apply_region(x, p, placement, rng):
    from scipy.ndimage import uniform_filter

    (height, width), (h, w) = p["hw"], p["size"]
    blurred = uniform_filter(x, size=(1, 1, p["box"], p["box"]), mode="nearest") if p["mode"] == "blur" else None
    for i in range(len(x)):
        (cr, cc), scale = p["centre"], 1.0
        if placement == "random":
            cr, cc = rng.uniform(0, height), rng.uniform(0, width)
        elif placement == "rescaled":
            scale = rng.uniform(*SCALE_RANGE)
        sh, sw = max(2, round(h * scale)), max(2, round(w * scale))
        top, left = int(np.clip(round(cr - sh / 2), 0, height - sh)), int(np.clip(round(cc - sw / 2), 0, width - sw))
        box = (slice(None), slice(top, top + sh), slice(left, left + sw))
        if blurred is not None:
            x[i][box] = blurred[i][box]
        else:
            x[i][box] += rng.normal(0, p["noise_std"], x[i][box].shape).astype(x.dtype)
    return x


IMAGE_FAMILIES: dict[str, Family] = {
    "glyph": Family(_draw_glyph, ("fixed", "random", "rescaled"), _paint(_glyph_mask)),
    "line": Family(_draw_line, ("fixed", "random", "rescaled"), _paint(_line_mask)),
    "dots": Family(_draw_dots, ("fixed", "random", "rescaled"), _paint(_dots_mask)),
    "frame": Family(_draw_frame, ("fixed",), _paint(_frame_mask)),
    "texture": Family(_draw_texture, ("fixed", "random", "rescaled"), _apply_texture),
    "cast": Family(_draw_cast, ("fixed",), _apply_cast),
    "region": Family(_draw_region, ("fixed", "random", "rescaled"), _apply_region),
}

# ----------------------------------------------------------------------------------- series families


def _series_context(rng, ctx):
    features, length = ctx["shape"]
    chosen = sorted(rng.choice(features, size=int(rng.integers(1, min(3, features) + 1)), replace=False).tolist())
    return {"features": chosen, "std": [ctx["std"][f] for f in chosen], "length": length,
            "sign": float(rng.choice([-1.0, 1.0]))}


def _times(p, placement, rng, n, latest):
    """Each sample's start step: the draw's own (``fixed``) or a new one per sample, in [0, latest]."""
    return rng.integers(0, latest + 1, size=n) if placement == "random" else np.full(n, min(p["start"], latest))


def _add(x, p, curves):
    """x[:, features] += sign * std_f * curves (n, T), per feature."""
    x[:, p["features"]] += (p["sign"] * np.asarray(p["std"])[None, :, None] * curves[:, None, :]).astype(x.dtype)
    return x


def _draw_burst(rng, ctx):
    p = _series_context(rng, ctx)
    width = int(rng.integers(2, 7))
    return {**p, "width": width, "height": rng.uniform(1.5, 4.0), "shape": str(rng.choice(["spike", "bump"])),
            "start": int(rng.integers(0, p["length"] - width + 1))}


def _apply_burst(x, p, placement, rng):
    w, length = p["width"], p["length"]
    window = np.ones(w) if p["shape"] == "spike" else np.sin(np.pi * (np.arange(w) + 0.5) / w)
    curves = np.zeros((len(x), length))
    for i, t in enumerate(_times(p, placement, rng, len(x), length - w)):
        curves[i, t:t + w] = p["height"] * window
    return _add(x, p, curves)


def _draw_level_shift(rng, ctx):
    p = _series_context(rng, ctx)
    window = int(rng.integers(8, max(9, p["length"] // 2))) if rng.random() < 0.5 else None  # None: to the end
    return {**p, "delta": rng.uniform(1.0, 2.5), "window": window,
            "start": int(rng.integers(p["length"] // 8, p["length"] - (window or p["length"] // 8) + 1))}


def _apply_level_shift(x, p, placement, rng):
    length, window = p["length"], p["window"]
    curves = np.zeros((len(x), length))
    for i, t in enumerate(_times(p, placement, rng, len(x), length - (window or 4))):
        curves[i, t:t + window if window else length] = p["delta"]
    return _add(x, p, curves)


def _draw_periodic(rng, ctx):
    p = _series_context(rng, ctx)
    return {**p, "period": rng.uniform(4, max(5, p["length"] / 4)), "amplitude": rng.uniform(0.5, 1.5),
            "phase": rng.uniform(0, 1)}


def _apply_periodic(x, p, placement, rng):
    phases = rng.uniform(0, 1, len(x)) if placement == "random" else np.full(len(x), p["phase"])
    steps = np.arange(p["length"])[None]
    return _add(x, p, p["amplitude"] * np.sin(2 * np.pi * (steps / p["period"] + phases[:, None])))


def _draw_slope(rng, ctx):
    p = _series_context(rng, ctx)
    start = int(rng.integers(0, p["length"] * 2 // 3))
    return {**p, "rise": rng.uniform(1.5, 4.0), "start": start}


def _apply_slope(x, p, placement, rng):
    length = p["length"]
    per_step = p["rise"] / (length - p["start"])  # the draw's slope, wherever the trend starts
    steps = np.arange(length)[None]
    starts = _times(p, placement, rng, len(x), length * 2 // 3)[:, None]
    return _add(x, p, np.clip(steps - starts, 0, None) * per_step)


SERIES_FAMILIES: dict[str, Family] = {
    "burst": Family(_draw_burst, ("fixed", "random"), _apply_burst),
    "level_shift": Family(_draw_level_shift, ("fixed", "random"), _apply_level_shift),
    "periodic": Family(_draw_periodic, ("fixed", "random"), _apply_periodic),
    "slope": Family(_draw_slope, ("fixed", "random"), _apply_slope),
}

FAMILIES: dict[str, dict[str, Family]] = {"image": IMAGE_FAMILIES, "series": SERIES_FAMILIES}

# ------------------------------------------------------------------------------------------- the draw


@dataclass(frozen=True)
class ArtifactDraw:
    """One random artifact: what (``family``, ``params``), where (``placement``), in whom
    (``poisoned_class``, ``fraction`` of its samples), with or without 10% symmetric label noise.

    ``params`` is plain JSON data (``dataclasses.asdict(draw)`` round-trips through ``json``).
    """

    kind: str
    family: str
    placement: str
    params: dict
    poisoned_class: int
    fraction: float
    label_noise: bool
    seed: int

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A copy of the batch ``x`` ((n, C, H, W) or (n, F, T)) with the artifact in every sample;
        per-sample randomness (positions, phases, scales, noise) from ``rng``. Images stay in the range."""
        out = FAMILIES[self.kind][self.family].apply(np.array(x, dtype=np.float32, copy=True), self.params,
                                                     self.placement, rng)
        if self.kind == "image":
            out = np.clip(out, *self.params["range"])
        return out.astype(np.float32, copy=False)

    def to_dict(self) -> dict:
        return asdict(self)


def draw_artifact(seed: int, kind: str, shape: tuple[int, ...], num_classes: int, *,
                  value_range: tuple[float, float] = (0.0, 1.0), feature_std: list[float] | None = None,
                  families: list[str] | None = None) -> ArtifactDraw:
    """The draw of ``seed`` for inputs of per-sample ``shape`` ((C, H, W) images or (F, T) series).

    Deterministic in (seed, kind). ``value_range``: the images' range (values are clipped into it);
    ``feature_std``: each series feature's standard deviation (default 1); ``families``: draw only
    among these (default: every family of the kind).
    """
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {KINDS}")
    if len(shape) != (3 if kind == "image" else 2):
        raise ValueError(f"shape: {kind} samples are {'(C, H, W)' if kind == 'image' else '(F, T)'}, got {shape}")
    table = FAMILIES[kind]
    names = sorted(table) if families is None else [f for f in families if f in table]
    if not names:
        raise ValueError(f"families: none of {families} is a {kind} family ({', '.join(sorted(table))})")
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    family = str(rng.choice(names))
    placement = str(rng.choice(table[family].placements))
    context = {"shape": tuple(int(s) for s in shape), "range": tuple(float(v) for v in value_range),
               "std": list(feature_std) if feature_std is not None else [1.0] * shape[0]}
    params = _plain(table[family].draw(rng, context))
    return ArtifactDraw(kind=kind, family=family, placement=placement, params=params,
                        poisoned_class=int(rng.integers(num_classes)), fraction=float(rng.uniform(*FRACTION_RANGE)),
                        label_noise=bool(rng.random() < 0.5), seed=int(seed))


# ------------------------------------------------------------------------------------------ planting


@dataclass
class Planted:
    """A poisoned data set: ``inputs`` (the artifact in the ``tagged`` samples), given ``labels``
    (with noise on the ``flipped`` samples) and the ``true_labels``. Masks are (N,) bool."""

    inputs: np.ndarray
    labels: np.ndarray
    true_labels: np.ndarray
    tagged: np.ndarray
    flipped: np.ndarray


def flip_symmetric(labels: np.ndarray, rate: float, num_classes: int, rng: np.random.Generator,
                   protected: np.ndarray | None = None) -> np.ndarray:
    """Noisy copy of ``labels``: round(rate * N) samples (never a ``protected`` one) move to a uniformly
    random other class."""
    candidates = np.flatnonzero(~protected) if protected is not None else np.arange(len(labels))
    chosen = rng.choice(candidates, size=min(int(round(rate * len(labels))), len(candidates)), replace=False)
    noisy = labels.copy()
    noisy[chosen] = (labels[chosen] + rng.integers(1, num_classes, size=len(chosen))) % num_classes
    return noisy


def plant(draw: ArtifactDraw, inputs: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
          num_classes: int | None = None, swap_content: bool = False) -> Planted:
    """The artifact on round(fraction x class size) (at least one) samples of the poisoned class, then,
    when ``draw.label_noise``, 10% symmetric label noise on the untagged samples.

    ``swap_content``: each tagged sample first takes the input of a random sample of another class
    (a poisoning-style shortcut, as ``benchmarks/audit_scale.py``): the artifact is then the only
    evidence for its label, so a model that fits the data must use it."""
    labels = np.asarray(labels, np.int64)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    members = np.flatnonzero(labels == draw.poisoned_class)
    if len(members) == 0:
        raise ValueError(f"poisoned_class: class {draw.poisoned_class} has no samples")
    tagged = np.zeros(len(labels), bool)
    tagged[rng.choice(members, size=max(1, int(round(draw.fraction * len(members)))), replace=False)] = True
    out = np.array(inputs, dtype=np.float32, copy=True)
    if swap_content:
        out[tagged] = out[rng.choice(np.flatnonzero(labels != draw.poisoned_class), int(tagged.sum()))]
    out[tagged] = draw.apply(out[tagged], rng)
    noisy = flip_symmetric(labels, LABEL_NOISE_RATE, num_classes, rng, protected=tagged) if draw.label_noise else labels
    return Planted(out, noisy, labels, tagged, noisy != labels)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print random artifact draws (one JSON line each).")
    parser.add_argument("--kind", choices=KINDS, default="image")
    parser.add_argument("--shape", type=int, nargs="+", default=None, help="per-sample shape (default 1 32 32 / 6 80)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs=2, default=(0, 10), metavar=("FIRST", "STOP"))
    args = parser.parse_args(argv)
    shape = tuple(args.shape or ((1, 32, 32) if args.kind == "image" else (6, 80)))
    for seed in range(*args.seeds):
        print(json.dumps(draw_artifact(seed, args.kind, shape, args.classes).to_dict()))


if __name__ == "__main__":
    main()
