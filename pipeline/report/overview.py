"""The class overview: one sortable row per class, the classes shown in detail linked.

One row costs a few hundred bytes, whatever the class size: at 1000 classes the table is about
0.3 MB. Default order: Clever-Hans score, highest first.
"""
from __future__ import annotations

import numpy as np

from .data import ReportData
from .markup import cell, e


def detailed_classes(data: ReportData, top_k: int) -> list[int]:
    """The classes shown in full: flagged ones first (highest score first), then the highest
    Clever-Hans scores, ``top_k`` in all."""
    ch = data.summary["clever_hans"]
    flagged = [f["class_id"] for f in sorted(ch["flagged_clusters"], key=lambda f: -f["score"])]
    ranked = [row["class_id"] for row in ch["class_ranking"] if row["class_id"] not in flagged]
    return (flagged + ranked)[:max(0, top_k)]


def overview_section(data: ReportData, detailed: list[int]) -> str:
    ch = data.summary["clever_hans"]
    score = {row["class_id"]: row["score"] for row in ch["class_ranking"]}
    outlier = {row["class_id"]: row.get("outlier", 0.0) for row in ch["class_ranking"]}
    effect_z = {row["class_id"]: row.get("effect_outlier", 0.0) for row in ch["class_ranking"]}
    order = {row["class_id"]: i for i, row in enumerate(ch["class_ranking"])}
    reasons = {v["class_id"]: v["reason"] for v in ch.get("verdicts", [])}
    flagged = {f["class_id"] for f in ch["flagged_clusters"]}
    k = max(data.num_classes, int(data.label.max(initial=-1)) + 1, int(data.class_of.max(initial=-1)) + 1)
    labelled = data.label >= 0
    mislabel = np.bincount(data.label[labelled & data.mislabel_suspect], minlength=k)
    explained = data.class_of >= 0
    artifact = np.bincount(data.class_of[explained & data.artifact_suspect], minlength=k)
    top = max([s for s in score.values()] + [1e-9])
    shown = set(detailed)
    rows = []
    for info in sorted(data.spray["classes"], key=lambda i: order.get(i["class_id"], len(order))):
        c = info["class_id"]
        cand = info.get("candidate") or {}
        conf = cand.get("confirmation")
        s = float(score.get(c, 0.0))
        name = e(data.name(c))
        link = f"<a href='#class-{c}'>{name}</a>" if c in shown else name
        verdict = "yes" if c in flagged else ""
        confirmed = "" if not conf else ("confirmed" if conf["confirmed"] else "rejected")
        rows.append(
            f"<tr{' class=flagged' if c in flagged else ''}>"
            + cell(link, data.name(c))
            + cell(str(info["num_samples"]), info["num_samples"], True)
            + cell(str(info["n_clusters"]), info["n_clusters"], True)
            + cell(f"{info['eigengap']:.3f}" if info.get("eigengap") is not None else "n/a",
                   info.get("eigengap") if info.get("eigengap") is not None else -1.0, True)
            + cell(f"{info['stability']:.2f}", info["stability"], True)
            + cell(f"{s:.3f} <span class='bar' style='width:{max(0.0, s) / top * 80:.0f}px'></span>", s, True)
            + cell(e(str(cand.get("detector", ""))))
            + cell(f"{outlier.get(c, 0.0):.1f}", outlier.get(c, 0.0), True)
            + cell(f"{effect_z.get(c, 0.0):.1f}", effect_z.get(c, 0.0), True)
            + cell(str(cand.get("size", "")), cand.get("size", 0), True)
            + f"<td title='{e(reasons.get(c, ''))}'>{verdict}</td>"
            + cell(confirmed)
            + cell(str(int(artifact[c])), int(artifact[c]), True)
            + cell(str(int(mislabel[c])), int(mislabel[c]), True)
            + "</tr>")
    head = ("<tr><th>class</th><th>samples</th><th>clusters</th><th>eigengap</th><th>stability</th>"
            "<th>Clever-Hans score</th><th>detector</th><th>score z</th><th>effect z</th><th>candidate size</th><th>flagged</th><th>counterfactual</th>"
            "<th>artifact suspects</th><th>mislabel suspects</th></tr>")
    rule = ch.get("flag_rule", {})
    return ("<h2>Classes</h2><p class='muted'>One row per class, flagged first, then by how far the class's best "
            "candidate stands out among classes (score z, effect z); click a column to sort, hover a flag cell for the "
            "verdict's reason. Two detectors propose a candidate group per class: <i>pattern</i>, samples that carry "
            "the same input pattern wherever it sits, with their relevance on it; <i>region</i>, a SpRAy cluster "
            "whose relevance goes where neither its class-mates' nor other classes' does, in a region of any shape. "
            "Their scores are compared only among classes (robust z of the log-score), and so are the counterfactual "
            "effects (robust z of the interval's lower end among the checked classes). The counterfactual pastes the "
            "candidate's pattern or region into other classes' inputs and compares p(class) with pasting class-mates' "
            "pixels at the same place. A class is flagged when its score z reaches "
            f"{rule.get('outlier_z', 0):.1f} and the paste raises p(class) (95% interval above "
            f"{rule.get('score_path_rise', 0):.3f}), or when the paste is "
            f"confirmed (interval above {rule.get('min_effect', 0):.2f}) and its effect z reaches "
            f"{rule.get('effect_outlier_z', 0):.1f}. Linked classes are shown in detail below. Mislabel suspects are "
            "counted by given label.</p>"
            f"<div class='scroll'><table class='sortable'><thead>{head}</thead><tbody>{''.join(rows)}"
            "</tbody></table></div>")
