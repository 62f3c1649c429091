"""Pictures for the report: PNG data URIs of images and heatmaps, SVG scatter plots.

Everything is embedded (data URIs, inline SVG) so the report opens offline.
"""
from __future__ import annotations

import base64
import html
import io

import numpy as np

# Categorical colours for clusters (Okabe-Ito, colour-blind safe), cycled.
CLUSTER_COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]


MAX_THUMBNAIL_PX = 128  # larger inputs are shrunk: the page size must not grow with the input size


def _png_data_uri(rgb: np.ndarray, scale: int) -> str:
    """A PNG data URI; small images are enlarged ``scale`` times (pixelated), large ones shrunk to
    at most :data:`MAX_THUMBNAIL_PX` pixels a side."""
    from PIL import Image

    img = Image.fromarray(np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8))
    if max(img.width, img.height) > MAX_THUMBNAIL_PX:
        img.thumbnail((MAX_THUMBNAIL_PX, MAX_THUMBNAIL_PX), Image.BILINEAR)
    elif scale != 1:
        scale = max(1, min(scale, MAX_THUMBNAIL_PX // max(img.width, img.height)))
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _grey(image: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) in [0, 1] → (H, W, 3)."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = img.transpose(1, 2, 0) if img.shape[0] in (1, 3) else img
        if img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        return np.clip(img, 0, 1)
    return np.repeat(np.clip(img, 0, 1)[..., None], 3, axis=2)


def heat_rgb(heatmap: np.ndarray) -> np.ndarray:
    """Signed relevance (H, W) → RGB, white at 0, red positive, blue negative (max-abs scaled)."""
    h = np.asarray(heatmap, dtype=np.float32)
    if h.ndim == 3:
        h = h.sum(0)
    m = float(np.abs(h).max()) or 1.0
    v = h / m
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    return np.stack([1 - neg, 1 - pos - neg, 1 - pos], axis=-1).clip(0, 1)


def image_uri(image: np.ndarray, scale: int = 3) -> str:
    return _png_data_uri(_grey(image), scale)


def heatmap_uri(heatmap: np.ndarray, scale: int = 3) -> str:
    return _png_data_uri(heat_rgb(heatmap), scale)


def overlay_uri(image: np.ndarray, heatmap: np.ndarray, scale: int = 3) -> str:
    """The image in grey with positive relevance in red and negative in blue on top."""
    grey = _grey(image) * 0.6 + 0.2
    h = np.asarray(heatmap, dtype=np.float32)
    if h.ndim == 3:
        h = h.sum(0)
    m = float(np.abs(h).max()) or 1.0
    alpha = np.clip(np.abs(h) / m, 0, 1)[..., None] ** 0.7
    colour = np.where((h >= 0)[..., None], np.array([0.85, 0.1, 0.1]), np.array([0.1, 0.3, 0.9]))
    return _png_data_uri(grey * (1 - alpha) + colour * alpha, scale)


def scatter_svg(xy: np.ndarray, groups: np.ndarray, *, ring: np.ndarray | None = None,
                titles: list[str] | None = None, size: int = 260) -> str:
    """An inline SVG scatter of 2-D points coloured by group; points where ``ring`` is true get a red ring."""
    pts = np.asarray(xy, dtype=np.float64)
    ok = np.isfinite(pts).all(1)
    if not ok.any():
        return f'<svg width="{size}" height="{size}"><text x="10" y="20">no map</text></svg>'
    lo, hi = pts[ok].min(0), pts[ok].max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    pad = 8
    xy_px = pad + (pts - lo) / span * (size - 2 * pad)
    parts = [f'<svg width="{size}" height="{size}" '
             f'viewBox="0 0 {size} {size}" class="scatter"><rect width="100%" height="100%" fill="#fafafa"/>']
    for i in np.flatnonzero(ok):
        g = int(groups[i])
        colour = CLUSTER_COLORS[g % len(CLUSTER_COLORS)] if g >= 0 else "#999"
        outline = ' stroke="#d00" stroke-width="1.5"' if ring is not None and ring[i] else ""
        title = f"<title>{html.escape(titles[i])}</title>" if titles else ""
        parts.append(f'<circle cx="{xy_px[i, 0]:.1f}" cy="{size - xy_px[i, 1]:.1f}" r="3" fill="{colour}" '
                     f'fill-opacity="0.8"{outline}>{title}</circle>')
    parts.append("</svg>")
    return "".join(parts)
