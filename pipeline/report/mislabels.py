"""The mislabel section: the cartography data map and the most likely mislabeled samples.

Data map (Swayamdipta et al. 2020, "Dataset Cartography", EMNLP): each sample at (variability,
confidence) of the model's probability of its given label over the training epochs, coloured by
correctness (the fraction of epochs it was predicted correctly). Easy-to-learn samples sit top
left, ambiguous ones to the right, hard-to-learn (often mislabeled) ones bottom left. Drawn as a
fixed-size raster (any N), with the strongest mislabel suspects on top as marks that name the
sample on hover. Needs a training trajectory; without one the section says so.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .data import ReportData
from .markup import e, thumb
from .pictures import density_map_uri, image_uri

MAP_PX = 260
SUSPECT_MARKS = 300
SUSPECT_THUMBNAILS = 32


def mislabel_section(data: ReportData, picture: Callable[[int], np.ndarray]) -> str:
    evidence = (data.summary["mislabel"].get("evidence") or {}).get("source", "training dynamics")
    out = [f"<h2>Mislabel suspects</h2><p class='muted'>{data.summary['mislabel']['suspects']} suspects; evidence: "
           f"{e(evidence)}.</p>"]
    out.append(data_map(data))
    aum = data.dynamics.get("aum")
    out.append("<p class='muted'>Most likely mislabeled, by mislabel score: given label → prediction; hover for the "
               "sample key.</p><div class='thumbs'>")
    for i in np.argsort(-np.nan_to_num(data.mislabel_score, nan=-np.inf), kind="stable")[:SUSPECT_THUMBNAILS]:
        detail = f"AUM {aum[i]:.1f}" if aum is not None else f"score {data.mislabel_score[i]:.2f}"
        out.append(thumb(image_uri(picture(i)), f"#{i} {data.name(int(data.label[i]))}→"
                         f"{data.name(int(data.prediction[i]))} {detail}", title=data.keys[i]))
    out.append("</div>")
    return "".join(out)


def data_map(data: ReportData) -> str:
    return data_map_html(data.dynamics, data.mislabel_suspect, data.mislabel_score, data.keys, data.label, data.name)


def data_map_html(d: dict, mislabel_suspect: np.ndarray, mislabel_score: np.ndarray, keys, label: np.ndarray,
                  name: Callable[[int], str]) -> str:
    """The data map (module docstring) of per-sample ``d`` = {variability, confidence, correctness}, with the
    strongest ``mislabel_suspect`` (by ``mislabel_score``) marked; ``keys``/``label``/``name`` for the hover text."""
    if not {"confidence", "variability", "correctness"} <= set(d):
        return ("<p class='muted'>No data map: it needs training dynamics (record them in your training loop with "
                "<code>DynamicsRecorder</code> and pass <code>--trajectory</code>).</p>")
    x, y, colour = d["variability"], d["confidence"], d["correctness"]
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return "<p class='muted'>No data map: no sample has training dynamics.</p>"
    x_max = max(float(np.nanmax(x[ok])) * 1.05, 1e-3)
    raster = density_map_uri(x, y, colour, extent=(0.0, x_max, 0.0, 1.0), pixels=MAP_PX)
    pad_l, pad_b, pad_t, pad_r = 44, 34, 8, 12
    w, h = MAP_PX + pad_l + pad_r, MAP_PX + pad_b + pad_t
    parts = [f"<svg width='{w}' height='{h}' viewBox='0 0 {w} {h}' class='datamap'>"
             f"<rect x='{pad_l}' y='{pad_t}' width='{MAP_PX}' height='{MAP_PX}' fill='#fafafa' stroke='#ccc'/>"
             f"<image x='{pad_l}' y='{pad_t}' width='{MAP_PX}' height='{MAP_PX}' href='{raster}' "
             "style='image-rendering:pixelated'/>"]
    for t in (0.0, 0.5, 1.0):
        yy = pad_t + (1 - t) * MAP_PX
        parts.append(f"<text x='{pad_l - 6}' y='{yy + 4:.0f}' font-size='10' text-anchor='end'>{t:.1f}</text>")
        xx = pad_l + t * MAP_PX
        parts.append(f"<text x='{xx:.0f}' y='{pad_t + MAP_PX + 14}' font-size='10' text-anchor='middle'>"
                     f"{t * x_max:.2f}</text>")
    parts.append(f"<text x='{pad_l + MAP_PX / 2:.0f}' y='{h - 4}' font-size='11' text-anchor='middle'>variability</text>"
                 f"<text x='12' y='{pad_t + MAP_PX / 2:.0f}' font-size='11' text-anchor='middle' "
                 f"transform='rotate(-90 12 {pad_t + MAP_PX / 2:.0f})'>confidence</text>")
    suspects = np.flatnonzero(mislabel_suspect & ok)
    strongest = suspects[np.argsort(-np.nan_to_num(mislabel_score[suspects], nan=-np.inf), kind="stable")]
    marked = strongest[:SUSPECT_MARKS]
    for i in marked:
        px = pad_l + min(x[i] / x_max, 1.0) * MAP_PX
        py = pad_t + (1 - np.clip(y[i], 0, 1)) * MAP_PX
        parts.append(f"<path d='M{px - 3:.1f},{py - 3:.1f}l6,6m0,-6l-6,6' stroke='#d00' stroke-width='1.4'>"
                     f"<title>{e(keys[i])} label {e(name(int(label[i])))}</title></path>")
    parts.append("</svg>")
    shown = f"the {len(marked)} strongest of {len(suspects)}" if len(marked) < len(suspects) else f"all {len(suspects)}"
    return (f"<div class='cls'><div>{''.join(parts)}</div><div style='max-width:420px'><b>Data map</b> (Swayamdipta "
            "et al. 2020): every sample at the mean (confidence) and standard deviation (variability) of the model's "
            "probability of its given label across training epochs; colour: correctness, "
            "<span style='color:#0073b3'>blue = never predicted correctly</span>, "
            "<span style='color:#e65e00'>orange = always</span>; opacity grows with density. "
            f"Red crosses: {shown} mislabel suspects. Mislabeled samples tend to sit bottom left (hard to "
            "learn), ambiguous ones to the right.</div></div>")
