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
    if info.get("verdict"):
        out.append(f"<p><b>Verdict</b>: {e(info['verdict']['reason'])}.</p>")
    if cand:
        out.append(_candidate(data, cand, picture, pixels))
    concept = next((f.get("latent_concept") for f in ch["flagged_clusters"] if f["class_id"] == k), None)
    if concept:
        out.append(_latent_concept(data, cand or {}, concept, picture))
    out.append(_spray(data, info, flagged, cand or {}))
    return "".join(out)


def _latent_concept(data: ReportData, cand: dict, concept: dict, picture) -> str:
    """The group's concept in the model's latent profile, how many suspects only it found (another size or
    look of the same shortcut), and its conditional heatmaps: where the concept sits in each suspect."""
    if not concept.get("distinct"):
        return ("<p class='muted'>Latent concept: the group's channels do not stand apart from other classes' "
                "samples (or none fires for it), so the suspects are the input-space matches alone.</p>")
    from unhans.storage import read_concept_maps

    out = [f"<p>Latent concept ({len(concept['channels'])} channel statistics of layer "
           f"<code>{e(str(concept.get('layer', 'auto')))}</code>): the group's median concept score is "
           f"{concept['member_level']:.2f} against {concept['reference_level']:.2f} for the 99th percentile of other "
           f"classes' samples; {concept['carriers_added']} more samples carry the concept without matching the pattern "
           f"pixel for pixel (another size or place of it) and are artifact suspects too.</p>"]
    maps = read_concept_maps(data.run, int(cand.get("class_id", -1)))
    if not maps:
        out.append(f"<p class='muted'>Conditional heatmaps {e(str(concept.get('maps', 'not drawn')))}.</p>")
        return "".join(out)
    members = set(cand.get("members", []))
    order = sorted(maps, key=lambda i: -data.artifact_score[i])
    out.append("<p class='muted'>Where the concept sits: each suspect with its heatmap restricted to the relevance "
               "that flows through the concept's channels (conditional heatmap), highest artifact score first; "
               "“found by the concept”: not matched in input space.</p><div class='thumbs'>")
    for i in order:
        how = "member" if i in members else "found by the concept"
        out.append(thumb(image_uri(picture(i)), f"#{i} label {data.name(int(data.label[i]))}", title=data.keys[i]))
        out.append(thumb(overlay_uri(picture(i), maps[i]), f"{how} · score {data.artifact_score[i]:.2f}"))
    out.append("</div>")
    return "".join(out)


def _candidate(data: ReportData, cand: dict, picture, pixels: int) -> str:
    if cand.get("placement") == "recurring":
        return _recurring(data, cand, picture, pixels)
    if cand.get("placement") == "region":
        from .region_candidate import region_section

        return region_section(data, cand, picture, _confirmation(
            cand, e(data.name(cand["class_id"])), "compared with pasting class-mates' own values in the same region"))
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
    out.append(_confirmation(cand, name, "compared with pasting the same pixels from class-mates"))
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


def _confirmation(cand: dict, name: str, control: str) -> str:
    conf = cand.get("confirmation")
    if not conf:
        return ""
    verdict = "<b style='color:#c00'>confirmed</b>" if conf["confirmed"] else "<b>not confirmed</b>"
    return (f"<p>Counterfactual check: {verdict}. Pasting the group's pattern into "
            f"{conf['recipients']} images of other classes raises p(class {name}) by {conf['effect']:+.3f} "
            f"(95% CI {conf['ci_low']:+.3f} to {conf['ci_high']:+.3f}) {control}; {conf['flip_rate']:.0%} of them "
            f"are then predicted as {name} (control {conf['control_flip_rate']:.0%}).</p>")


def _recurring(data: ReportData, cand: dict, picture, pixels: int) -> str:
    """A pattern found wherever it sits: the aligned pattern, and each member with a box where it is."""
    name = e(data.name(cand["class_id"]))
    pattern = np.asarray(cand["pattern"], dtype=np.float32)
    mask = np.asarray(cand["pattern_weights"]) > 0
    f = int(cand.get("search_factor", 1))
    size = (pattern.shape[-2] * f, pattern.shape[-1] * f)
    out = [f"<p>Best candidate group: {cand['size']} samples ({cand['size_fraction']:.0%} of the class) carry the same "
           f"pattern at different places (position spread shown below). At their own positions members put "
           f"{cand['concentration']:.0%} of their positive relevance on it; the rest of the class "
           f"{cand['baseline']:.0%} and other classes {cand['dataset_baseline']:.0%} at the same positions (relevance "
           f"evidence {cand['relevance_evidence']:.2f}). {cand['pattern_constancy']:.0%} of that relevance sits on "
           f"pixels constant across the group; the pattern differs from what the rest of the class has there by "
           f"{cand['pattern_distinctiveness']:.2f} pixel standard deviations; separation from the rest "
           f"{cand.get('separation', 0):.2f} (1 = a 100x gap in distance); {cand.get('other_rate', 0):.0%} of a "
           f"reference sample of other classes carries it; {cand['mislabel_fraction']:.0%} mislabel suspects among "
           f"members.</p>",
           _confirmation(cand, name, "compared with pasting class-mates' own pixels from the same places")]
    shown = np.where(mask, pattern, np.nan).mean(0)
    out.append("<div class='thumbs'>" + thumb(image_uri(np.nan_to_num(shown, nan=0.0), scale=12),
                                              "the aligned pattern (pixels it is matched on)", width=128))
    mean_key = f"{cand['class_id']}_candidate"
    if mean_key in data.means:
        out.append(thumb(heatmap_uri(data.means[mean_key]), "mean heatmap of the group", width=128))
    out.append("</div>")
    members = np.asarray(cand["members"], dtype=np.int64)
    where = {int(i): p for i, p in zip(members, cand.get("positions") or [])}
    order = members[np.argsort(-data.artifact_score[members], kind="stable")][:MEMBER_THUMBNAILS]
    out.append(f"<p class='muted'>Members (image, LRP overlay; green: where the pattern sits), highest artifact score "
               f"first ({len(order)} of {len(members)}):</p><div class='thumbs'>")
    for i in order:
        r, c = where.get(int(i), (0, 0))
        box = (r, c, r + size[0], c + size[1])
        out.append(f"<div class='thumb' title='{e(data.keys[i])}'>"
                   + windowed(image_uri(picture(i)), box, pixels) + e(f"#{i} label {data.name(int(data.label[i]))}")
                   + "</div>")
        out.append("<div class='thumb'>" + windowed(overlay_uri(picture(i), data.relevance.one(int(i))), box, pixels)
                   + e(f"score {data.artifact_score[i]:.2f}") + "</div>")
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
