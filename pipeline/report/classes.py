"""One detailed class: its Clever-Hans candidate, SpRAy map, eigenvalue spectrum and cluster means.

Bounded whatever the class size: at most :data:`MEMBER_THUMBNAILS` member pairs, one scatter of
at most :data:`~.pictures.MAX_MAP_POINTS` points, one spectrum, one mean heatmap per cluster.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .data import ReportData
from .markup import e, thumb, windowed
from .pictures import CLUSTER_COLORS, MAX_MAP_POINTS, heatmap_uri, image_uri, overlay_uri, scatter_svg, spectrum_svg

MEMBER_THUMBNAILS = 10


def class_section(data: ReportData, info: dict, picture: Callable[[int], np.ndarray], pixels: int) -> str:
    k = info["class_id"]
    ch = data.summary["clever_hans"]
    flagged = any(f["class_id"] == k for f in ch["flagged_clusters"])
    cand = info.get("candidate")
    score = next((row["score"] for row in ch["class_ranking"] if row["class_id"] == k), 0.0)
    verdict = "<b style='color:#c00'>flagged</b>" if flagged else "not flagged"
    out = [f"<h3 id='class-{k}'>class {e(data.name(k))}: {verdict} · Clever-Hans score {score:.2f} · "
           f"{info['num_samples']} samples · {info['n_clusters']} clusters</h3>"]
    if cand:
        out.append(_candidate(data, cand, picture, pixels))
    out.append(_spray(data, info, flagged, cand or {}))
    return "".join(out)


def _candidate(data: ReportData, cand: dict, picture, pixels: int) -> str:
    k = cand["class_id"]
    name = e(data.name(k))
    w = cand["window"]
    out = [f"<p>Best candidate group: {cand['size']} samples ({cand['size_fraction']:.0%} of the class). Members put "
           f"{cand['concentration']:.0%} of their positive relevance into the green window (rows {w[0]}–{w[2] - 1}, "
           f"columns {w[1]}–{w[3] - 1}); the rest of the class {cand['baseline']:.0%}, other classes "
           f"{cand['dataset_baseline']:.0%} (relevance evidence {cand['relevance_evidence']:.2f}). Inside it "
           f"{cand['pattern_constancy']:.0%} of their relevance sits on pixels that are constant across the group; "
           f"the constant pattern differs from the rest of the class by {cand['pattern_distinctiveness']:.2f} pixel "
           f"standard deviations; {cand['mislabel_fraction']:.0%} mislabel suspects among members.</p>"]
    conf = cand.get("confirmation")
    if conf:
        verdict = "<b style='color:#c00'>confirmed</b>" if conf["confirmed"] else "<b>not confirmed</b>"
        out.append(f"<p>Counterfactual check: {verdict}. Pasting the group's constant pattern into "
                   f"{conf['recipients']} images of other classes raises p(class {name}) by {conf['effect']:+.3f} "
                   f"(95% CI {conf['ci_low']:+.3f} to {conf['ci_high']:+.3f}) compared with pasting the same pixels "
                   f"from class-mates; {conf['flip_rate']:.0%} of them are then predicted as {name} (control "
                   f"{conf['control_flip_rate']:.0%}).</p>")
    mean_key = f"{k}_candidate"
    if mean_key in data.means:
        out.append("<div class='thumbs'>" + windowed(heatmap_uri(data.means[mean_key]), w, pixels, 128)
                   + "<div class='thumb' style='align-self:center'>mean heatmap of the group</div></div>")
    members = np.asarray(cand["members"], dtype=np.int64)
    order = members[np.argsort(-data.artifact_score[members], kind="stable")][:MEMBER_THUMBNAILS]
    out.append(f"<p class='muted'>Members (image, LRP overlay), highest artifact score first ({len(order)} of "
               f"{len(members)}):</p><div class='thumbs'>")
    for i in order:
        out.append(thumb(image_uri(picture(i)), f"#{i} label {data.name(int(data.label[i]))}", title=data.keys[i]))
        out.append(thumb(overlay_uri(picture(i), data.relevance.one(int(i))),
                         f"score {data.artifact_score[i]:.2f}"))
    out.append("</div>")
    return "".join(out)


def _spray(data: ReportData, info: dict, flagged: bool, cand: dict) -> str:
    k = info["class_id"]
    idx = np.flatnonzero(data.class_of == k)
    carriers = set(cand.get("carriers", [])) if flagged else set()
    ring = np.array([i in carriers for i in idx], dtype=bool)
    titles = [f"#{i} {data.keys[i]} label {data.name(int(data.label[i]))} cluster {int(data.cluster[i])}" for i in idx]
    shown = min(len(idx), MAX_MAP_POINTS)
    caption = f"{shown} of {len(idx)} samples" if shown < len(idx) else f"{len(idx)} samples"
    out = [f"<div class='cls'><div style='max-width:270px'><b>SpRAy map</b> ({caption}; red ring: artifact "
           "suspect)<br>"
           + scatter_svg(data.umap[idx], data.cluster[idx], ring=ring, titles=titles) + "</div>"]
    eigenvalues = info.get("eigenvalues") or []
    if eigenvalues:
        out.append(f"<div style='max-width:230px'><b>Laplacian spectrum</b> (k={info['k_chosen']}, stability "
                   f"{info['stability']:.2f})<br>{spectrum_svg(eigenvalues, int(info['k_chosen']))}</div>")
    out.append("<div class='thumbs' style='max-width:560px'>")
    for c, size in enumerate(info["cluster_sizes"]):
        colour = CLUSTER_COLORS[c % len(CLUSTER_COLORS)]
        key = f"{k}_{c}"
        if key in data.means:
            out.append(f"<div class='thumb'><img src='{heatmap_uri(data.means[key])}' width='96'>"
                       f"<span class='swatch' style='background:{colour}'></span>{e(f'cluster {c}: {size} samples')}</div>")
    out.append("</div></div>")
    return "".join(out)
