"""The report's section on the heatmaps themselves: can the audit trust them?

Region-perturbation curves (mean explained logit as regions are replaced, most relevant first,
for the configured explainer, the gradient and a random ordering; the explainer's least relevant
first too) and the cascading randomization curve (median rank correlation of the heatmaps with
the trained model's as layers are re-initialized from the output down). A failed check also puts
a warning at the top of the page (:func:`trust_banner`).
"""
from __future__ import annotations

from .markup import e, fmt
from .pictures import line_chart_svg

COLOURS = {"explainer": "#0072B2", "gradient": "#009E73", "random": "#999999"}


def trust_banner(check: dict | None) -> str:
    """A red box with every warning of the explainer check, or nothing when the heatmaps passed."""
    if not check or check.get("trustworthy", True):
        return ""
    items = "".join(f"<li>{e(w)}</li>" for w in check["warnings"])
    return ("<div class='card flag' style='margin-top:16px'><b>The heatmaps failed a sanity check</b>"
            f"<ul>{items}</ul>Every finding below (SpRAy clusters, Clever-Hans ranking, artifact scores) rests on "
            "these heatmaps and is not trustworthy. See <a href='#faithfulness'>Can the audit trust its "
            "heatmaps?</a></div>")


def faithfulness_section(check: dict | None) -> str:
    if not check:
        return ("<h2 id='faithfulness'>Can the audit trust its heatmaps?</h2><p class='muted'>Not checked "
                "(<code>faithfulness.enabled: false</code>).</p>")
    method, removed = check["method"], check["removed"]
    curves = check["mean_curves"]["logit"]
    series = [(f"{method} MoRF", removed, curves["explainer_morf"], COLOURS["explainer"], False),
              (f"{method} LeRF", removed, curves["explainer_lerf"], COLOURS["explainer"], True),
              ("gradient MoRF", removed, curves["gradient_morf"], COLOURS["gradient"], False),
              ("random order", removed, curves["random_morf"], COLOURS["random"], False)]
    advantage = check["advantage_over_random"]
    settings = check["settings"]
    verdict = ("better than random" if check["better_than_random"] else "<b>not better than random</b>")
    out = [f"<h2 id='faithfulness'>Can the audit trust its heatmaps?</h2><p class='muted'>On {check['samples']} "
           f"samples (stratified by explained class, seed {settings['seed']}). Left: region perturbation (seed 003, "
           f"Alg. 3): {settings['region']}-pixel squares replaced ({e(settings['replacement'])}) in order of relevance; "
           "a faithful heatmap makes the explained logit fall fast most-relevant-first (MoRF) and slowly "
           "least-relevant-first (LeRF). Right: the heatmaps of models re-initialized layer by layer from the output "
           "down, rank-correlated with the trained model's (Adebayo et al. 2018); heatmaps that do not change "
           "describe the input, not the model.</p>",
           "<div style='display:flex;gap:16px;flex-wrap:wrap'>",
           line_chart_svg(series, x_label="fraction of regions replaced", y_label="mean explained logit")]
    randomization = check.get("randomization")
    if randomization:
        steps = list(range(len(randomization["layers"]) + 1))
        median = randomization["median"]
        rseries = [(method, steps, [1.0] + median["explainer"], COLOURS["explainer"], False),
                   ("gradient", steps, [1.0] + median["gradient"], COLOURS["gradient"], False)]
        ticks = ["none"] + [str(name) for name in randomization["layers"]]
        out.append(line_chart_svg(rseries, x_label="re-initialized down to layer", y_label="median Spearman |R|",
                                  x_ticks=ticks, limit=randomization["limit"]))
    out.append("</div><table>")
    aopc = check["aopc"]
    out.append(f"<tr><th>AOPC (logit)</th><td>{e(method)} {fmt(aopc['explainer'])} · gradient {fmt(aopc['gradient'])}"
               f" · random {fmt(aopc['random'])}</td></tr>"
               f"<tr><th>{e(method)} − random</th><td>{fmt(advantage['mean'])} (95% CI {fmt(advantage['ci95'][0])} … "
               f"{fmt(advantage['ci95'][1])}): {verdict}</td></tr>"
               f"<tr><th>area between LeRF and MoRF</th><td>{e(method)} {fmt(check['abpc']['explainer'])}</td></tr>")
    if randomization:
        passed = "changed" if randomization["passed"] else "<b>near-identical</b>"
        out.append(f"<tr><th>fully randomized model</th><td>median Spearman {fmt(randomization['final'])} "
                   f"(warns at ≥ {fmt(randomization['limit'])}): {passed}</td></tr>")
    out.append("</table>")
    return "".join(out)
