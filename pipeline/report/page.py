"""Assembling ``RUN/report.html`` from its sections.

Sections, in reading order: header (run, dataset, model, stage times) and cards, with a warning
when the heatmaps failed their sanity check; the evaluation against injected ground truth
(embedded dataset only); whether the heatmaps can be trusted (faithfulness); the class overview (every class, one
row); the classes in detail (``top_k``: flagged ones first, then the highest Clever-Hans
scores); the mislabel section (data map, most likely mislabeled); configuration and versions.
No section grows with the number of samples, and only the overview grows with the number of
classes (one row each), so the page stays under :data:`SIZE_BUDGET_BYTES` at 1000 classes; a
page over the budget is still written, and its size is reported to the caller.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .classes import class_section
from .faithfulness import faithfulness_section, trust_banner
from .data import ReportData
from .markup import CSS, SORT_SCRIPT, e, fmt
from .mislabels import mislabel_section
from .overview import detailed_classes, overview_section

SIZE_BUDGET_BYTES = 15_000_000
DEFAULT_TOP_K = 10


def display_image(image: np.ndarray, mean=None, std=None) -> np.ndarray:
    """A model input (C, H, W) back in [0, 1] for display: normalization undone, else min-max scaled."""
    x = np.asarray(image, dtype=np.float32)
    if mean is not None and std is not None:
        x = x * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]
    lo, hi = float(x.min()), float(x.max())
    if lo < -0.01 or hi > 1.01:  # arrays in another range: stretch each image
        x = (x - lo) / ((hi - lo) or 1.0)
    return np.clip(x, 0.0, 1.0)


def write_report(run: Path, images, *, mean=None, std=None, top_k: int = DEFAULT_TOP_K) -> Path:
    """Render the report of a run whose flags stage has finished; returns its path.

    images: the inputs as the model sees them, indexable by sample id
    (:class:`unhans.pipeline.sources.SampleImages`); ``mean``/``std``: the input normalization;
    ``top_k``: how many classes get the detailed section.
    """
    from unhans.storage import RunLayout
    from unhans.storage.atomic import write_bytes_atomic

    data = ReportData.load(Path(run))

    def picture(i: int) -> np.ndarray:
        return display_image(images[int(i)], mean, std)

    pixels = images.shape[-1]
    detailed = detailed_classes(data, top_k)
    by_class = {info["class_id"]: info for info in data.spray["classes"]}
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>unhans audit — {e(data.run.name)}</title>"
           f"<style>{CSS}</style></head><body>", _header(data), trust_banner(data.summary.get("faithfulness"))]
    if "evaluation" in data.summary:
        out.append("<h2>Evaluation against the injected ground truth</h2><p class='muted'>The embedded dataset "
                   "keeps which images were tagged and which labels were flipped; the detectors never read it.</p><table>")
        out += [f"<tr><th>{e(k)}</th><td>{fmt(v)}</td></tr>" for k, v in data.summary["evaluation"].items()]
        out.append("</table>")
    out.append(faithfulness_section(data.summary.get("faithfulness")))
    out.append(overview_section(data, detailed))
    out.append(f"<h2>Classes in detail</h2><p class='muted'>{len(detailed)} of {data.num_classes} classes: flagged "
               "ones first, then the highest Clever-Hans scores (<code>report.top_k</code> sets how many). Green "
               "window: where the candidate group's relevance concentrates. SpRAy map: UMAP of the class's heatmaps, "
               "coloured by spectral cluster. Spectrum: the smallest eigenvalues of the kNN graph's Laplacian; the "
               "dashed line is the gap that chose the number of clusters. Right: each cluster's mean heatmap "
               "(red = positive relevance).</p>")
    out += [class_section(data, by_class[k], picture, pixels) for k in detailed]
    out.append(mislabel_section(data, picture))
    out.append(f"<h2>Configuration</h2><pre>{e(json.dumps(data.summary['config'], indent=2))}</pre>")
    out.append(f"<p class='muted'>versions: {e(json.dumps(data.summary.get('versions', {})))}</p>")
    out.append(f"<script>{SORT_SCRIPT}</script></body></html>")
    path = RunLayout(data.run).report
    write_bytes_atomic(path, "".join(out).encode())
    return path


def _header(data: ReportData) -> str:
    summary = data.summary
    dataset, model = summary["dataset"], summary["model"]
    if model.get("train_accuracy") is not None:  # trained by the audit (embedded digits)
        model_text = (f"model accuracy {fmt(model.get('train_accuracy'))} (training labels), "
                      f"{fmt(model.get('test_accuracy'))} (test)")
    else:
        model_text = f"model {e(model.get('name') or model.get('factory') or model.get('checkpoint'))}"
        if model.get("checkpoint"):
            model_text += f" (<code>{e(model['checkpoint'])}</code>)"
    out = [f"<h1>unhans audit</h1><div class='muted'>run <code>{e(data.run.resolve())}</code> · dataset "
           f"{e(dataset.get('name'))} ({e(dataset.get('kind', ''))}, {dataset.get('num_classes')} classes) · "
           f"{summary['samples']['total']} samples · {model_text}</div>"]
    stages = summary.get("stages") or {}
    order = ["data", "train", "explain", "faithfulness", "dynamics", "spray"]  # pipeline order (the JSON keys are sorted)
    timed = [f"{e(name)} {stages[name]['seconds']:.1f} s" for name in order
             if stages.get(name, {}).get("seconds") is not None]
    if timed:
        rate = stages.get("explain", {}).get("samples_per_second")
        out.append(f"<div class='muted'>stage times: {' · '.join(timed)}"
                   + (f" (explain {rate:.0f} samples/s)" if rate else "") + "</div>")
    ch = summary["clever_hans"]
    flagged = ch["flagged_clusters"]
    out.append("<div class='cards' style='margin-top:16px'>"
               f"<div class='card {'flag' if flagged else ''}'><b>{len(flagged)}</b>Clever-Hans class(es) flagged</div>"
               f"<div class='card'><b>{ch['artifact_suspects']}</b>artifact suspects</div>"
               f"<div class='card'><b>{summary['mislabel']['suspects']}</b>mislabel suspects</div>"
               f"<div class='card'><b>{summary['samples']['quarantined']}</b>quarantined samples</div></div>")
    return "".join(out)
