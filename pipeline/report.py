"""``RUN/report.html``: one self-contained page a person reads to judge the audit.

Every user-controlled string (paths, class names, keys, config values) is HTML-escaped; every
picture is embedded, so the file opens offline and can be mailed around. Everything comes from
the run store and the user's source: thumbnails are decoded from the input again (nothing of
the dataset is copied into the run directory) and shown as the model saw them, normalization
undone.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from .rendering import CLUSTER_COLORS, heatmap_uri, image_uri, overlay_uri, scatter_svg

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{margin-bottom:4px} h2{border-bottom:2px solid #eee;padding-bottom:4px;margin-top:36px}
.muted{color:#666} table{border-collapse:collapse;margin:8px 0} td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
.cards{display:flex;gap:12px;flex-wrap:wrap} .card{border:1px solid #ddd;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{font-size:1.6em;display:block} .flag{border-color:#d33;background:#fff5f5}
.thumbs{display:flex;flex-wrap:wrap;gap:6px} .thumb{text-align:center;font-size:11px;color:#555}
.thumb img{display:block;border:1px solid #ccc;image-rendering:pixelated}
.bar{background:#d55e00;height:10px;display:inline-block;vertical-align:middle}
.cls{display:flex;gap:18px;align-items:flex-start;flex-wrap:wrap;margin-bottom:18px;border-bottom:1px dashed #eee;padding-bottom:12px}
.swatch{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:4px}
.box{position:relative;display:inline-block} .box span{position:absolute;border:2px solid #0a0;box-sizing:border-box}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return _e(v)


def _thumb(src: str, caption: str, width: int = 96, title: str = "") -> str:
    return (f'<div class="thumb" title="{_e(title)}"><img src="{src}" width="{width}" alt="{_e(caption)}">'
            f'{_e(caption)}</div>')


def _windowed(src: str, window, size_px: int, pixels: int, width: int = 96) -> str:
    r0, c0, r1, c1 = window
    f = width / pixels
    return (f'<div class="box"><img src="{src}" width="{width}" style="image-rendering:pixelated;border:1px solid #ccc">'
            f'<span style="top:{r0 * f:.0f}px;left:{c0 * f:.0f}px;width:{(c1 - c0) * f:.0f}px;'
            f'height:{(r1 - r0) * f:.0f}px"></span></div>')


def display_image(image: np.ndarray, mean=None, std=None) -> np.ndarray:
    """A model input (C, H, W) back in [0, 1] for display: normalization undone, else min-max scaled."""
    x = np.asarray(image, dtype=np.float32)
    if mean is not None and std is not None:
        x = x * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]
    lo, hi = float(x.min()), float(x.max())
    if lo < -0.01 or hi > 1.01:  # arrays in another range: stretch each image
        x = (x - lo) / ((hi - lo) or 1.0)
    return np.clip(x, 0.0, 1.0)


def write_report(run: Path, images, *, mean=None, std=None) -> Path:
    """Render the report of a run whose flags stage has finished.

    images: the inputs as the model sees them, indexable by sample id
    (:class:`unhans.pipeline.sources.SampleImages`); ``mean``/``std``: the input normalization.
    """
    from unhans.storage import ClusterMeans, open_run

    run = Path(run)
    r = open_run(run)
    layout = r.layout
    summary = json.loads(layout.summary.read_text())
    spray_info = json.loads(layout.spray.read_text())
    means = ClusterMeans(run)
    relevance = r.relevance()
    samples = r.table("samples").sort_by("sample_id")
    keys = samples.column("key").to_pylist()
    label = samples.column("label").to_numpy()
    pred = samples.column("prediction").to_numpy()
    sp = r.table("spray").sort_by("sample_id")
    cls_col, clu_col = sp.column("class_id").to_numpy(), sp.column("cluster").to_numpy()
    xy = np.stack([sp.column("umap_x").to_numpy(), sp.column("umap_y").to_numpy()], 1)
    flags = r.table("flags").sort_by("sample_id")
    art_score = flags.column("artifact_score").to_numpy()
    mis_score = flags.column("mislabel_score").to_numpy()
    dyn = r.table("dynamics").sort_by("sample_id")
    aum = dyn.column("aum").to_numpy(zero_copy_only=False) if "aum" in dyn.column_names else None
    names = summary.get("dataset", {}).get("class_names") or [str(i) for i in range(int(cls_col.max()) + 1)]
    pixels = images.shape[-1]

    def picture(i: int) -> np.ndarray:
        return display_image(images[int(i)], mean, std)

    def cname(k: int) -> str:
        return names[k] if 0 <= k < len(names) else str(k)

    ch = summary["clever_hans"]
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>unhans audit — {_e(run.name)}</title>"
           f"<style>{CSS}</style></head><body>"]
    dataset, model = summary["dataset"], summary["model"]
    if model.get("train_accuracy") is not None:  # trained by the audit (embedded digits)
        model_text = (f"model accuracy {_fmt(model.get('train_accuracy'))} (training labels), "
                      f"{_fmt(model.get('test_accuracy'))} (test)")
    else:
        model_text = f"model {_e(model.get('name') or model.get('factory') or model.get('checkpoint'))}"
        if model.get("checkpoint"):
            model_text += f" (<code>{_e(model['checkpoint'])}</code>)"
    out.append(f"<h1>unhans audit</h1><div class='muted'>run <code>{_e(run.resolve())}</code> · dataset "
               f"{_e(dataset.get('name'))} ({_e(dataset.get('kind', ''))}, {dataset.get('num_classes')} classes) · "
               f"{summary['samples']['total']} samples · {model_text}</div>")
    stages = summary.get("stages") or {}
    order = ["data", "train", "explain", "dynamics", "spray"]  # pipeline order (the JSON keys are sorted)
    timed = [f"{_e(name)} {stages[name]['seconds']:.1f} s" for name in order
             if stages.get(name, {}).get("seconds") is not None]
    if timed:
        rate = stages.get("explain", {}).get("samples_per_second")
        out.append(f"<div class='muted'>stage times: {' · '.join(timed)}"
                   + (f" (explain {rate:.0f} samples/s)" if rate else "") + "</div>")
    flagged = ch["flagged_clusters"]
    out.append("<div class='cards' style='margin-top:16px'>")
    out.append(f"<div class='card {'flag' if flagged else ''}'><b>{len(flagged)}</b>Clever-Hans cluster(s)</div>")
    out.append(f"<div class='card'><b>{ch['artifact_suspects']}</b>artifact suspects</div>")
    out.append(f"<div class='card'><b>{summary['mislabel']['suspects']}</b>mislabel suspects</div>")
    out.append(f"<div class='card'><b>{summary['samples']['quarantined']}</b>quarantined samples</div></div>")
    if "evaluation" in summary:
        out.append("<h2>Evaluation against the injected ground truth</h2><p class='muted'>The embedded dataset "
                   "keeps which images were tagged and which labels were flipped; the detectors never read it.</p><table>")
        for k, v in summary["evaluation"].items():
            out.append(f"<tr><th>{_e(k)}</th><td>{_fmt(v)}</td></tr>")
        out.append("</table>")

    # Clever-Hans ranking
    out.append("<h2>Classes ranked by Clever-Hans score</h2><p class='muted'>A class scores its best cluster: "
               "relevance concentrated in one small window (against the rest of the class and the other classes) "
               "× constancy of the input pattern there × how far that pattern stands from the rest of the class, "
               "discounted by the group's share of mislabel suspects.</p><table><tr><th>#</th><th>class</th><th>score</th><th></th></tr>")
    ranking = ch["class_ranking"]
    top = max([s for s in (x["score"] for x in ranking)] + [1e-9])
    for i, row in enumerate(ranking, 1):
        w = max(0.0, row["score"]) / top * 200
        out.append(f"<tr><td>{i}</td><td>{_e(cname(row['class_id']))}</td><td>{row['score']:.3f}</td>"
                   f"<td><span class='bar' style='width:{w:.0f}px'></span></td></tr>")
    out.append("</table>")

    # Flagged groups
    out.append("<h2>Clever-Hans candidates</h2><p class='muted'>Each class's best candidate group: the samples "
               "whose relevance concentrates in the green window, where their inputs show one constant pattern. "
               f"A class is flagged when its score reaches {ch.get('flag_threshold', 0):.2f}.</p>")
    candidates = {c["class_id"]: c["candidate"] for c in spray_info["classes"] if c["candidate"]}
    shown = [row["class_id"] for row in ranking[:3] if row["class_id"] in candidates]
    shown += [e["class_id"] for e in flagged if e["class_id"] not in shown]
    for k in shown:
        e = candidates[k]
        is_flagged = any(f["class_id"] == k for f in flagged)
        members = np.asarray(e["members"], dtype=np.int64)
        order = members[np.argsort(-art_score[members])]
        verdict = "<b style='color:#c00'>flagged</b>" if is_flagged else "not flagged"
        out.append(f"<h3>class {_e(cname(k))}: {verdict} · score {e['score']:.2f} · {e['size']} samples "
                   f"({e['size_fraction']:.0%} of the class)</h3>")
        out.append(f"<p>Members put {e['concentration']:.0%} of their positive relevance into the window (rows "
                   f"{e['window'][0]}–{e['window'][2] - 1}, columns {e['window'][1]}–{e['window'][3] - 1}); the rest "
                   f"of the class {e['baseline']:.0%}, other classes {e['dataset_baseline']:.0%} (relevance evidence "
                   f"{e['relevance_evidence']:.2f}). Inside it {e['pattern_constancy']:.0%} of their relevance sits on pixels that are constant across the group; the constant pattern differs from the rest of the class by "
                   f"{e['pattern_distinctiveness']:.2f} pixel standard deviations; {e['mislabel_fraction']:.0%} mislabel "
                   "suspects among members.</p>")
        conf = e.get("confirmation")
        if conf:
            verdict_cf = ("<b style='color:#c00'>confirmed</b>" if conf["confirmed"] else "<b>not confirmed</b>")
            out.append(f"<p>Counterfactual check: {verdict_cf}. Pasting the group's constant pattern into "
                       f"{conf['recipients']} images of other classes raises p(class {_e(cname(k))}) by "
                       f"{conf['effect']:+.3f} (95% CI {conf['ci_low']:+.3f} to {conf['ci_high']:+.3f}) compared with "
                       f"pasting the same pixels from class-mates; {conf['flip_rate']:.0%} of them are then predicted "
                       f"as {_e(cname(k))} (control {conf['control_flip_rate']:.0%}).</p>")
        mean_key = f"{k}_candidate"
        if mean_key in means:
            out.append("<div class='thumbs'>" + _windowed(heatmap_uri(means[mean_key]), e["window"], pixels, pixels, 128)
                       + "<div class='thumb' style='align-self:center'>mean heatmap of the group</div></div>")
        out.append("<p class='muted'>Members (image, LRP overlay), highest artifact score first:</p><div class='thumbs'>")
        for i in order[:10]:
            out.append(_thumb(image_uri(picture(i)), f"#{i} label {cname(int(label[i]))}", title=keys[i]))
            out.append(_thumb(overlay_uri(picture(i), relevance.one(int(i))), f"score {art_score[i]:.2f}"))
        out.append("</div>")

    # Per-class SpRAy
    out.append("<h2>SpRAy per class</h2><p class='muted'>Left: UMAP map of the class's heatmaps, coloured by "
               "spectral cluster (red ring: flagged artifact suspects). Right: each cluster's mean heatmap (red = positive relevance).</p>")
    for info in spray_info["classes"]:
        k = info["class_id"]
        idx = np.flatnonzero(cls_col == k)
        cand = info["candidate"] or {}
        flagged_members = set(cand.get("carriers", [])) if any(f["class_id"] == k for f in flagged) else set()
        ring = np.array([i in flagged_members for i in idx])
        titles = [f"#{i} {keys[i]} label {cname(int(label[i]))} cluster {int(clu_col[i])}" for i in idx]
        out.append(f"<div class='cls'><div><b>class {_e(cname(k))}</b> · {info['num_samples']} samples · "
                   f"{info['n_clusters']} clusters (eigengap k={info['k_chosen']}, stability {info['stability']:.2f})<br>"
                   + scatter_svg(xy[idx], clu_col[idx], ring=ring, titles=titles) + "</div><div class='thumbs'>")
        for c, size in enumerate(info["cluster_sizes"]):
            colour = CLUSTER_COLORS[c % len(CLUSTER_COLORS)]
            key = f"{k}_{c}"
            if key in means:
                cap = f"cluster {c}: {size} samples"
                out.append(f"<div class='thumb'><img src='{heatmap_uri(means[key])}' width='96'>"
                           f"<span class='swatch' style='background:{colour}'></span>{_e(cap)}</div>")
        out.append("</div></div>")

    # Mislabel suspects
    source_of_evidence = (summary["mislabel"].get("evidence") or {}).get("source", "training dynamics")
    out.append("<h2>Most likely mislabeled</h2><p class='muted'>Ranked by mislabel score (evidence: "
               f"{_e(source_of_evidence)}); given label → prediction; hover for the sample key.</p><div class='thumbs'>")
    for i in np.argsort(-mis_score)[:32]:
        evidence = f"AUM {aum[i]:.1f}" if aum is not None else f"score {mis_score[i]:.2f}"
        out.append(_thumb(image_uri(picture(i)), f"#{i} {cname(int(label[i]))}→{cname(int(pred[i]))} {evidence}",
                          title=keys[i]))
    out.append("</div>")
    out.append(f"<h2>Configuration</h2><pre>{_e(json.dumps(summary['config'], indent=2))}</pre>")
    out.append(f"<p class='muted'>versions: {_e(json.dumps(summary.get('versions', {})))}</p></body></html>")
    path = layout.report
    from unhans.storage.atomic import write_bytes_atomic

    write_bytes_atomic(path, "".join(out).encode())
    return path
