"""Pictures for the report: PNG data URIs of images and heatmaps, SVG scatter plots and spectra,
raster data maps.

Everything is embedded (data URIs, inline SVG) so the report opens offline. Every picture has a
size that does not grow with the number of samples: scatters draw at most ``max_points`` points,
data maps are rasters of a fixed size.
"""
from __future__ import annotations

import base64
import html
from html import escape
import io

import numpy as np

# Categorical colours for clusters (Okabe-Ito, colour-blind safe), cycled.
CLUSTER_COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]

MAX_THUMBNAIL_PX = 128  # larger inputs are shrunk: the page size must not grow with the input size
MAX_MAP_POINTS = 400    # points drawn in one scatter; the rest are summarized by the caption


def _png_data_uri(rgb: np.ndarray, scale: int, rgba: bool = False) -> str:
    """A PNG data URI; small images are enlarged ``scale`` times (pixelated), large ones shrunk to
    at most :data:`MAX_THUMBNAIL_PX` pixels a side (``scale=1``: the size as given)."""
    from PIL import Image

    img = Image.fromarray(np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8), "RGBA" if rgba else "RGB")
    if scale != 1 and max(img.width, img.height) > MAX_THUMBNAIL_PX:
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


def subsample(n: int, keep: np.ndarray | None, limit: int, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` of ``range(n)``, sorted: every index where ``keep`` is true first (up to the
    limit), the rest drawn at random with ``seed``."""
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    kept = np.flatnonzero(keep) if keep is not None else np.zeros(0, np.int64)
    kept = kept[:limit]
    rest = np.setdiff1d(np.arange(n), kept)
    extra = rng.choice(rest, size=limit - len(kept), replace=False) if limit > len(kept) else rest[:0]
    return np.sort(np.concatenate([kept, extra]))


def scatter_svg(xy: np.ndarray, groups: np.ndarray, *, ring: np.ndarray | None = None,
                titles: list[str] | None = None, size: int = 260, max_points: int = MAX_MAP_POINTS) -> str:
    """An inline SVG scatter of 2-D points coloured by group; points where ``ring`` is true get a
    red ring. At most ``max_points`` points are drawn (ringed ones first, the rest at random)."""
    pts = np.asarray(xy, dtype=np.float64)
    ok = np.isfinite(pts).all(1)
    if not ok.any():
        return f'<svg width="{size}" height="{size}"><text x="10" y="20">no map</text></svg>'
    lo, hi = pts[ok].min(0), pts[ok].max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    pad = 8
    xy_px = pad + (pts - lo) / span * (size - 2 * pad)
    finite = np.flatnonzero(ok)
    drawn = finite[subsample(len(finite), None if ring is None else ring[finite], max_points)]
    parts = [f'<svg width="{size}" height="{size}" '
             f'viewBox="0 0 {size} {size}" class="scatter"><rect width="100%" height="100%" fill="#fafafa"/>']
    for i in drawn:
        g = int(groups[i])
        colour = CLUSTER_COLORS[g % len(CLUSTER_COLORS)] if g >= 0 else "#999"
        outline = ' stroke="#d00" stroke-width="1.5"' if ring is not None and ring[i] else ""
        title = f"<title>{html.escape(titles[i])}</title>" if titles else ""
        parts.append(f'<circle cx="{xy_px[i, 0]:.1f}" cy="{size - xy_px[i, 1]:.1f}" r="3" fill="{colour}" '
                     f'fill-opacity="0.8"{outline}>{title}</circle>')
    parts.append("</svg>")
    return "".join(parts)


def spectrum_svg(eigenvalues, chosen: int, *, width: int = 220, height: int = 120) -> str:
    """The smallest Laplacian eigenvalues λ_1 ≤ λ_2 ≤ ... as dots, with a dashed line in the gap
    after λ_chosen (the eigengap that chose the number of clusters)."""
    values = np.asarray(eigenvalues, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        return ""
    pad, n = 18, len(values)
    top = max(float(values.max()), 1e-12)
    x = pad + np.arange(n) * (width - 2 * pad) / max(n - 1, 1)
    y = height - pad - values / top * (height - 2 * pad)
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" class="spectrum">'
             f'<rect width="100%" height="100%" fill="#fafafa"/>'
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#bbb"/>']
    if 1 <= chosen < n:
        gx = (x[chosen - 1] + x[chosen]) / 2
        parts.append(f'<line x1="{gx:.1f}" y1="4" x2="{gx:.1f}" y2="{height - pad}" stroke="#d55e00" '
                     f'stroke-dasharray="4 3"/><text x="{gx + 3:.1f}" y="14" font-size="11" fill="#d55e00">'
                     f'k = {chosen}</text>')
    for i in range(n):
        parts.append(f'<circle cx="{x[i]:.1f}" cy="{y[i]:.1f}" r="3" fill="#0072B2">'
                     f'<title>λ{i + 1} = {values[i]:.4f}</title></circle>'
                     f'<text x="{x[i] - 3:.1f}" y="{height - 4}" font-size="9" fill="#666">{i + 1}</text>')
    parts.append("</svg>")
    return "".join(parts)


def density_map_uri(x: np.ndarray, y: np.ndarray, colour_value: np.ndarray, *, extent, pixels: int = 240) -> str:
    """A raster of N points binned on a ``pixels`` x ``pixels`` grid: each cell coloured by the mean
    of ``colour_value`` (in [0, 1]: blue 0 → orange 1) of its points, opaque where points are
    dense (log scale), transparent where there are none. Size independent of N.

    extent: (x_min, x_max, y_min, y_max); y grows upwards.
    """
    x0, x1, y0, y1 = extent
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(colour_value)
    cx = np.clip(((x[ok] - x0) / max(x1 - x0, 1e-12) * pixels).astype(np.int64), 0, pixels - 1)
    cy = np.clip(((y[ok] - y0) / max(y1 - y0, 1e-12) * pixels).astype(np.int64), 0, pixels - 1)
    cell = (pixels - 1 - cy) * pixels + cx
    count = np.bincount(cell, minlength=pixels * pixels).astype(np.float64)
    total = np.bincount(cell, weights=colour_value[ok], minlength=pixels * pixels)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    low, high = np.array([0.0, 0.45, 0.70]), np.array([0.90, 0.37, 0.0])  # Okabe-Ito blue → vermillion
    rgb = low + np.clip(mean, 0, 1)[:, None] * (high - low)
    alpha = np.where(count > 0, 0.35 + 0.65 * np.log1p(count) / np.log1p(max(count.max(), 1.0)), 0.0)
    rgba = np.concatenate([rgb, alpha[:, None]], axis=1).reshape(pixels, pixels, 4)
    return _png_data_uri(rgba, 1, rgba=True)


def line_chart_svg(series: list[tuple[str, list[float], list[float], str, bool]], *, x_label: str, y_label: str,
                   x_ticks: list[str] | None = None, limit: float | None = None, width: int = 360,
                   height: int = 220) -> str:
    """Lines (label, xs, ys, colour, dashed) on shared axes, a legend, and an optional dashed horizontal
    ``limit``; ``x_ticks`` names the points of the first series (else the x range is printed)."""
    points = [(x, y) for _, xs, ys, _, _ in series for x, y in zip(xs, ys) if np.isfinite(y)]
    if not points:
        return ""
    xs_all, ys_all = np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)
    if limit is not None:
        ys_all = np.append(ys_all, limit)
    x0, x1 = float(xs_all.min()), float(xs_all.max()) or 1.0
    y0, y1 = float(ys_all.min()), float(ys_all.max())
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    left, right, top, bottom = 44, 110, 10, 34

    def px(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1.0) * (width - left - right)

    def py(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)

    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" class="chart">'
             f'<rect width="100%" height="100%" fill="#fafafa"/>'
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#bbb"/>'
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#bbb"/>'
             f'<text x="{left - 4}" y="{top + 8}" font-size="10" text-anchor="end" fill="#666">{y1:.2g}</text>'
             f'<text x="{left - 4}" y="{height - bottom}" font-size="10" text-anchor="end" fill="#666">{y0:.2g}</text>'
             f'<text x="{(left + width - right) / 2:.0f}" y="{height - 4}" font-size="11" text-anchor="middle" '
             f'fill="#444">{escape(x_label)}</text>'
             f'<text x="12" y="{(top + height - bottom) / 2:.0f}" font-size="11" text-anchor="middle" fill="#444" '
             f'transform="rotate(-90 12 {(top + height - bottom) / 2:.0f})">{escape(y_label)}</text>']
    if x_ticks:
        for x, tick in zip(series[0][1], x_ticks):
            parts.append(f'<text x="{px(x):.1f}" y="{height - bottom + 12}" font-size="9" text-anchor="middle" '
                         f'fill="#666">{escape(tick)}</text>')
    else:
        parts.append(f'<text x="{left}" y="{height - bottom + 12}" font-size="9" fill="#666">{x0:.2g}</text>'
                     f'<text x="{width - right}" y="{height - bottom + 12}" font-size="9" text-anchor="end" '
                     f'fill="#666">{x1:.2g}</text>')
    if limit is not None:
        parts.append(f'<line x1="{left}" y1="{py(limit):.1f}" x2="{width - right}" y2="{py(limit):.1f}" '
                     f'stroke="#d55e00" stroke-dasharray="4 3"/>')
    for i, (label, xs, ys, colour, dashed) in enumerate(series):
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys) if np.isfinite(y))
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
                     f'<line x1="{width - right + 8}" y1="{top + 8 + 16 * i}" x2="{width - right + 26}" '
                     f'y2="{top + 8 + 16 * i}" stroke="{colour}" stroke-width="2"{dash}/>'
                     f'<text x="{width - right + 30}" y="{top + 12 + 16 * i}" font-size="10" fill="#333">'
                     f'{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
