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
    flagged = {f["class_id"] for f in ch["flagged_clusters"]}
    k = max(data.num_classes, int(data.label.max(initial=-1)) + 1, int(data.class_of.max(initial=-1)) + 1)
    labelled = data.label >= 0
    mislabel = np.bincount(data.label[labelled & data.mislabel_suspect], minlength=k)
    explained = data.class_of >= 0
    artifact = np.bincount(data.class_of[explained & data.artifact_suspect], minlength=k)
    top = max([s for s in score.values()] + [1e-9])
    shown = set(detailed)
    rows = []
    for info in sorted(data.spray["classes"], key=lambda i: -score.get(i["class_id"], 0.0)):
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
            + cell(str(cand.get("size", "")), cand.get("size", 0), True)
            + cell(verdict, 1 if verdict else 0)
            + cell(confirmed)
            + cell(str(int(artifact[c])), int(artifact[c]), True)
            + cell(str(int(mislabel[c])), int(mislabel[c]), True)
            + "</tr>")
    head = ("<tr><th>class</th><th>samples</th><th>clusters</th><th>eigengap</th><th>stability</th>"
            "<th>Clever-Hans score</th><th>candidate size</th><th>flagged</th><th>counterfactual</th>"
            "<th>artifact suspects</th><th>mislabel suspects</th></tr>")
    return ("<h2>Classes</h2><p class='muted'>One row per class, highest Clever-Hans score first; click a column "
            "to sort. A class scores its best candidate group: samples that carry the same input pattern, wherever "
            "it sits, with their relevance on it (against the rest of the class and the other classes at the same "
            "places) × constancy of the pattern × how far it stands from the rest of the class × how cleanly the "
            "group separates from the rest, discounted by the group's share of mislabel suspects and by how often "
            f"other classes carry the pattern; flagged at {ch.get('flag_threshold', 0):.2f}. Linked classes are shown in detail below "
            "(flagged first, then the highest scores). Mislabel suspects are counted by given label.</p>"
            f"<div class='scroll'><table class='sortable'><thead>{head}</thead><tbody>{''.join(rows)}"
            "</tbody></table></div>")
