"""A region candidate in the report (:mod:`unhans.spray.relevance_regions`): where the group's relevance goes.

Images: the region (any shape) over the group's mean heatmap, then members with their overlays.
Time series: each member drawn as line plots of its features, relevance shaded over time and the
region's time steps marked (a features x time bitmap is not what a person reads a series from).
"""
from __future__ import annotations

from html import escape

import numpy as np

from ..stages.spray_tasks import region_name
from .markup import e, thumb
from .pictures import heatmap_uri, image_uri, overlay_uri

MEMBER_THUMBNAILS = 10
SERIES_SHOWN = 4          # members drawn as line plots
FEATURES_SHOWN = 4        # per member: the region's features first, then the most relevant ones


def region_section(data, cand: dict, picture, confirmation: str) -> str:
    from unhans.spray import ClusterEvidence
    from unhans.spray.relevance_regions import region_pixels

    name = e(data.name(cand["class_id"]))
    members = np.asarray(cand["members"], dtype=np.int64)
    first = np.asarray(picture(int(members[0]))) if len(members) else np.zeros((1, 1, 1))
    series = first.ndim == 2  # a (features, time) sample
    mask = region_pixels(ClusterEvidence.from_dict(cand), *first.shape[-2:], dilate=0)
    where = "features x time steps" if series else "pixels"
    out = [f"<p>Best candidate group (region detector): {cand['size']} samples ({cand['size_fraction']:.0%} of the "
           f"class) put {cand['concentration']:.0%} of their positive relevance into a region of {int(mask.sum())} "
           f"{where} where the rest of the class puts {cand['baseline']:.0%} and other classes "
           f"{cand['dataset_baseline']:.0%} (relevance evidence {cand['relevance_evidence']:.2f}, cross-fitted: the "
           f"region chosen on half the group, judged on the other half; separation from the rest of the class "
           f"{cand.get('separation', 0):.2f}); {cand['mislabel_fraction']:.0%} mislabel suspects among members.</p>",
           confirmation]
    order = members[np.argsort(-data.artifact_score[members], kind="stable")]
    if series:
        out.append(_series_members(data, order[:SERIES_SHOWN], mask, picture))
        return "".join(out)
    mean_key = f"{cand['class_id']}_{region_name(cand.get('alternative', 0))}"  # the alternative the check chose
    out.append("<div class='thumbs'>" + thumb(image_uri(mask.astype(np.float32)), "the region (white)", width=128))
    if mean_key in data.means:
        out.append(thumb(heatmap_uri(data.means[mean_key]), "mean heatmap of the group", width=128))
    out.append("</div>")
    shown = order[:MEMBER_THUMBNAILS]
    out.append(f"<p class='muted'>Members (image, LRP overlay), highest artifact score first ({len(shown)} of "
               f"{len(members)}):</p><div class='thumbs'>")
    for i in shown:
        out.append(thumb(image_uri(picture(i)), f"#{i} label {data.name(int(data.label[i]))}", title=data.keys[i]))
        out.append(thumb(overlay_uri(picture(i), data.relevance.one(int(i))), f"score {data.artifact_score[i]:.2f}"))
    out.append("</div>")
    return "".join(out)


def _series_members(data, ids: np.ndarray, mask: np.ndarray, picture) -> str:
    """Line plots of members' features (time on x), relevance shaded under each line, the region's time
    steps marked by a band."""
    out = [f"<p class='muted'>Members (highest artifact score first; {len(ids)} shown): each feature of the series as a "
           "line, red shading where it draws positive relevance, the grey band where the region lies.</p>"
           "<div class='thumbs'>"]
    for i in ids:
        x = np.asarray(picture(int(i)), np.float32).reshape(mask.shape)
        r = np.asarray(data.relevance.one(int(i)), np.float32).reshape(-1, *mask.shape).sum(0)
        in_region = np.flatnonzero(mask.any(1))
        rest = [f for f in np.argsort(-np.clip(r, 0, None).sum(1)) if f not in set(in_region)]
        features = (list(in_region) + rest)[:FEATURES_SHOWN]
        out.append(f"<div class='thumb' title='{e(data.keys[i])}'>"
                   + _series_svg(x, r, mask, features)
                   + e(f"#{i} label {data.name(int(data.label[i]))} · score {data.artifact_score[i]:.2f}") + "</div>")
    out.append("</div>")
    return "".join(out)


def _series_svg(x: np.ndarray, relevance: np.ndarray, mask: np.ndarray, features: list[int],
                width: int = 260, row: int = 46) -> str:
    """One small panel per feature: the values as a line, positive relevance as red bars, the region as a band."""
    steps = x.shape[1]
    scale = float(np.clip(relevance, 0, None).max()) or 1.0
    parts = [f'<svg width="{width}" height="{row * len(features)}" class="chart">']
    for j, f in enumerate(features):
        top = j * row
        values = x[f]
        lo, hi = float(values.min()), float(values.max())
        span = (hi - lo) or 1.0

        def px(t: float) -> float:
            return 30 + t / max(steps - 1, 1) * (width - 36)

        parts.append(f'<rect x="30" y="{top + 2}" width="{width - 36}" height="{row - 6}" fill="#fafafa"/>')
        for t in np.flatnonzero(mask[f]):
            parts.append(f'<rect x="{px(t - 0.5):.1f}" y="{top + 2}" width="{(width - 36) / max(steps - 1, 1):.1f}" '
                         f'height="{row - 6}" fill="#ccc"/>')
        for t in np.flatnonzero(relevance[f] > 0):
            h = relevance[f, t] / scale * (row - 8)
            parts.append(f'<rect x="{px(t) - 1:.1f}" y="{top + row - 4 - h:.1f}" width="2" height="{h:.1f}" '
                         f'fill="#d62728" opacity="0.6"/>')
        line = " ".join(f"{px(t):.1f},{top + 2 + (hi - v) / span * (row - 8):.1f}" for t, v in enumerate(values))
        parts.append(f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="1.2"/>'
                     f'<text x="2" y="{top + row / 2:.0f}" font-size="9" fill="#444">{escape(f"f{f}")}</text>')
    parts.append("</svg>")
    return "".join(parts)
