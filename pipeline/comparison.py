"""``unhans compare OLD NEW``: what changed between two audits, keyed by sample ``key``.

Samples are matched by their ``key`` (the input's path or row key), never by position, so the
comparison survives a re-ordered or grown dataset. Classes are matched by name. Clever-Hans
candidates are matched by what they are, not by cluster number: the same class with at least
:data:`SAME_MEMBERS` of its carriers in common (Jaccard, by key), or the same aligned pattern
(weighted RMS difference below :data:`SAME_PATTERN` pixel standard deviations).

The result is a dict (``--json``), a short text (stdout) and a self-contained HTML page. Its
``alarms`` decide the exit code of the command (:data:`FAIL_ON` names the conditions).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAME_MEMBERS = 0.3      # Jaccard of two candidates' carriers (by key) above which they are the same finding
SAME_PATTERN = 0.5      # σ_x: weighted RMS difference of two aligned patterns below which they are the same
TOP = 3                 # "ranked in the top": the first TOP classes of the Clever-Hans ranking
SLOWER = 0.5            # a stage 50% slower (and at least MIN_SECONDS slower) is a regression
MIN_SECONDS = 1.0
EXAMPLES = 20           # keys listed per change
FAIL_ON = ("new-flag", "suspects", "slower", "untrusted")


class CompareError(ValueError):
    """A bad ``--fail-on`` or a directory that is not a finished run."""


@dataclass
class FailOn:
    """When ``unhans compare`` exits 1: a newly flagged class, suspects grown by more than ``suspects``
    (relative, e.g. 0.25), a slower stage, heatmaps that became untrustworthy."""

    new_flag: bool = True
    suspects: float | None = 0.25
    slower: bool = False
    untrusted: bool = True

    @classmethod
    def parse(cls, text: str) -> "FailOn":
        """``new-flag,suspects:25%,slower,untrusted`` (any subset; ``none`` for never; suspects:25 = 25%)."""
        out = cls(new_flag=False, suspects=None, slower=False, untrusted=False)
        for item in filter(None, (t.strip() for t in text.split(","))):
            name, _, value = item.partition(":")
            if name == "none":
                continue
            if name not in FAIL_ON:
                raise CompareError(f"--fail-on: unknown condition {name!r} (one of {', '.join(FAIL_ON)}, none)")
            if name == "suspects":
                try:
                    number = float(value.rstrip("%")) if value else 25.0
                    out.suspects = number / 100  # a percentage, with or without the % sign
                except ValueError:
                    raise CompareError(f"--fail-on: suspects:{value} is not a number or percentage") from None
            else:
                setattr(out, name.replace("-", "_"), True)
        return out


class _Run:
    """What the comparison reads of one run: summary, candidates, and per-key columns."""

    def __init__(self, path: Path):
        from unhans.storage import open_run

        self.path = Path(path)
        if not (self.path / "summary.json").exists():
            raise CompareError(f"{self.path}: no summary.json (not a finished unhans audit run)")
        run = open_run(self.path)
        self.summary = json.loads(run.layout.summary.read_text())
        self.spray = json.loads(run.layout.spray.read_text()) if run.layout.spray.exists() else {"classes": []}
        samples = run.table("samples", columns=["sample_id", "key", "label"]).sort_by("sample_id")
        flags = run.table("flags", columns=["sample_id", "artifact_suspect", "mislabel_suspect"]).sort_by("sample_id")
        self.keys = np.asarray(samples.column("key").to_pylist(), dtype=object)
        self.labels = samples.column("label").to_numpy()
        self.artifact = flags.column("artifact_suspect").to_numpy(zero_copy_only=False).astype(bool)
        self.mislabel = flags.column("mislabel_suspect").to_numpy(zero_copy_only=False).astype(bool)
        self.names = list(self.summary.get("dataset", {}).get("class_names") or [])

    def name(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else str(class_id)

    def flagged(self) -> dict[str, dict]:
        return {self.name(c["class_id"]): c for c in self.summary["clever_hans"]["flagged_clusters"]}

    def candidate(self, class_id: int) -> dict | None:
        for info in self.spray["classes"]:
            if info["class_id"] == class_id:
                return info.get("candidate")
        return None

    def top(self) -> list[str]:
        return [self.name(r["class_id"]) for r in self.summary["clever_hans"]["class_ranking"][:TOP]]


def _key_sets(old: _Run, new: _Run, old_mask: np.ndarray, new_mask: np.ndarray) -> dict:
    a, b = set(old.keys[old_mask]), set(new.keys[new_mask])
    return {"old": len(a), "new": len(b), "added": len(b - a), "removed": len(a - b), "kept": len(a & b),
            "added_keys": sorted(b - a)[:EXAMPLES], "removed_keys": sorted(a - b)[:EXAMPLES]}


def _pattern_distance(a: dict, b: dict, pixel_std: float) -> float | None:
    """Weighted RMS difference (σ_x) of two candidates' aligned patterns, None when not comparable."""
    pa, pb = a.get("pattern"), b.get("pattern")
    if pa is None or pb is None:
        return None
    pa, pb = np.asarray(pa, np.float64), np.asarray(pb, np.float64)
    if pa.shape != pb.shape:
        return None
    weights = np.maximum(np.asarray(a["pattern_weights"], np.float64), np.asarray(b["pattern_weights"], np.float64))
    if weights.sum() <= 0:
        return None
    squared = ((pa - pb) ** 2).mean(axis=0) if pa.ndim == 3 else (pa - pb) ** 2
    return float(np.sqrt((squared * weights).sum() / weights.sum()) / max(pixel_std, 1e-12))


def _candidates(old: _Run, new: _Run) -> list[dict]:
    """Each flagged candidate of either run: kept (the same finding in both), new or gone."""
    pixel_std = float(new.spray.get("pixel_std") or old.spray.get("pixel_std") or 1.0)
    found_old, found_new = old.flagged(), new.flagged()
    rows, matched = [], set()
    for name_old, flag_old in found_old.items():
        cand_old = old.candidate(flag_old["class_id"]) or {}
        keys_old = set(old.keys[np.asarray(cand_old.get("carriers") or [], np.int64)])
        best = None
        for name_new, flag_new in found_new.items():
            cand_new = new.candidate(flag_new["class_id"]) or {}
            keys_new = set(new.keys[np.asarray(cand_new.get("carriers") or [], np.int64)])
            jaccard = len(keys_old & keys_new) / max(len(keys_old | keys_new), 1)
            distance = _pattern_distance(cand_old, cand_new, pixel_std)
            same = (name_old == name_new and jaccard >= SAME_MEMBERS) or (distance is not None and distance <= SAME_PATTERN)
            if same and (best is None or jaccard > best[1]):
                best = (name_new, jaccard, distance)
        if best is None:
            rows.append({"class": name_old, "status": "gone", "score_old": flag_old["score"]})
        else:
            matched.add(best[0])
            rows.append({"class": name_old, "status": "kept", "class_new": best[0], "members_jaccard": best[1],
                         "pattern_distance": best[2], "score_old": flag_old["score"],
                         "score_new": found_new[best[0]]["score"]})
    rows += [{"class": name, "status": "new", "score_new": flag["score"]}
             for name, flag in found_new.items() if name not in matched]
    return rows


def compare_runs(old_dir: str | Path, new_dir: str | Path, fail_on: FailOn | None = None) -> dict:
    """The comparison of two finished runs (module docstring); ``alarms`` lists what ``fail_on`` counts."""
    fail_on = fail_on or FailOn()
    old, new = _Run(Path(old_dir)), _Run(Path(new_dir))
    every_old, every_new = np.ones(len(old.keys), bool), np.ones(len(new.keys), bool)
    samples = _key_sets(old, new, every_old, every_new)
    samples.update(old=len(old.keys), new=len(new.keys))
    label_old = dict(zip(old.keys, old.labels))
    changed = [{"key": k, "old": old.name(int(label_old[k])), "new": new.name(int(v))}
               for k, v in zip(new.keys, new.labels)
               if k in label_old and old.name(int(label_old[k])) != new.name(int(v))]  # by name: class indices may shift
    flagged_old, flagged_new = set(old.flagged()), set(new.flagged())
    confirmed = {run: {name for name, c in run.flagged().items() if (c.get("confirmation") or {}).get("confirmed")}
                 for run in (old, new)}
    top_old, top_new = old.top(), new.top()
    result = {
        "old": str(old.path), "new": str(new.path),
        "samples": samples,
        "labels_changed": {"count": len(changed), "examples": changed[:EXAMPLES]},
        "clever_hans": {
            "flagged_old": sorted(flagged_old), "flagged_new": sorted(flagged_new),
            "appeared": sorted(flagged_new - flagged_old), "disappeared": sorted(flagged_old - flagged_new),
            "confirmed_old": sorted(confirmed[old]), "confirmed_new": sorted(confirmed[new]),
            "top_old": top_old, "top_new": top_new,
            "entered_top": [c for c in top_new if c not in top_old], "left_top": [c for c in top_old if c not in top_new],
            "candidates": _candidates(old, new),
        },
        "suspects": {"artifact": _key_sets(old, new, old.artifact, new.artifact),
                     "mislabel": _key_sets(old, new, old.mislabel, new.mislabel)},
        "stages": _stages(old.summary, new.summary),
        "faithfulness": {"old": (old.summary.get("faithfulness") or {}).get("trustworthy"),
                         "new": (new.summary.get("faithfulness") or {}).get("trustworthy")},
    }
    if "evaluation" in old.summary and "evaluation" in new.summary:
        result["evaluation"] = {"old": old.summary["evaluation"], "new": new.summary["evaluation"]}
    result["alarms"] = _alarms(result, fail_on)
    result["exit_code"] = 1 if result["alarms"] else 0
    return result


def _stages(old: dict, new: dict) -> dict:
    out = {}
    for name in sorted(set(old.get("stages") or {}) | set(new.get("stages") or {})):
        a = ((old.get("stages") or {}).get(name) or {}).get("seconds")
        b = ((new.get("stages") or {}).get(name) or {}).get("seconds")
        row = {"old": a, "new": b}
        if a and b:
            row["ratio"] = round(b / a, 3)
            row["regression"] = bool(b > a * (1 + SLOWER) and b - a >= MIN_SECONDS)
        out[name] = row
    return out


def _alarms(result: dict, fail_on: FailOn) -> list[str]:
    alarms = []
    ch = result["clever_hans"]
    if fail_on.new_flag and ch["appeared"]:
        alarms.append(f"new Clever-Hans class(es): {', '.join(ch['appeared'])}")
    if fail_on.suspects is not None:
        for kind, counts in result["suspects"].items():
            if counts["new"] > counts["old"] * (1 + fail_on.suspects) and counts["added"] > 0:
                alarms.append(f"{kind} suspects grew from {counts['old']} to {counts['new']} "
                              f"(more than {100 * fail_on.suspects:.0f}%)")
    if fail_on.slower:
        alarms += [f"stage {name} slower: {row['old']:.1f} s → {row['new']:.1f} s"
                   for name, row in result["stages"].items() if row.get("regression")]
    if fail_on.untrusted and result["faithfulness"]["new"] is False and result["faithfulness"]["old"] is not False:
        alarms.append("the heatmaps are no longer trustworthy (faithfulness check failed)")
    return alarms


def summary_text(result: dict) -> str:
    """The few lines ``unhans compare`` prints."""
    s, ch = result["samples"], result["clever_hans"]
    lines = [f"samples: {s['old']} → {s['new']} ({s['added']} new, {s['removed']} removed, {s['kept']} kept); "
             f"labels changed: {result['labels_changed']['count']}"]
    lines.append(f"Clever-Hans flagged: {', '.join(ch['flagged_old']) or 'none'} → {', '.join(ch['flagged_new']) or 'none'}"
                 + (f"; appeared: {', '.join(ch['appeared'])}" if ch["appeared"] else "")
                 + (f"; disappeared: {', '.join(ch['disappeared'])}" if ch["disappeared"] else ""))
    for c in (c for c in ch["candidates"] if c["status"] == "kept"):
        if c["class_new"] == c["class"]:
            lines.append(f"class {c['class']}: the same finding as before ({c['members_jaccard']:.0%} of its members "
                         "in common)")
        else:
            lines.append(f"class {c['class']}'s pattern is now found in class {c['class_new']} (the same pattern, "
                         f"{c['members_jaccard']:.0%} of its members in common)")
    if ch["entered_top"] or ch["left_top"]:
        lines.append(f"top {TOP} of the ranking: {', '.join(ch['top_old'])} → {', '.join(ch['top_new'])}")
    for kind, c in result["suspects"].items():
        lines.append(f"{kind} suspects: {c['old']} → {c['new']} ({c['added']} added, {c['removed']} removed, "
                     f"{c['kept']} kept)")
    slow = [f"{n} {r['old']:.1f}→{r['new']:.1f} s" for n, r in result["stages"].items() if r.get("regression")]
    if slow:
        lines.append("slower stages: " + ", ".join(slow))
    trust = result["faithfulness"]
    if trust["old"] != trust["new"]:
        lines.append(f"heatmaps trustworthy: {trust['old']} → {trust['new']}")
    lines.append("alarms: " + ("; ".join(result["alarms"]) if result["alarms"] else "none"))
    return "\n".join(lines)


def write_html(result: dict, path: str | Path) -> Path:
    """A self-contained page of the comparison (the report's style; every run-supplied text escaped)."""
    from unhans.storage.atomic import write_bytes_atomic

    from .report.markup import CSS, e, fmt

    ch = result["clever_hans"]
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>unhans compare</title><style>{CSS}</style>"
           f"</head><body><h1>unhans compare</h1><div class='muted'>old <code>{e(result['old'])}</code> · new "
           f"<code>{e(result['new'])}</code></div><div class='cards' style='margin-top:16px'>"]
    out.append(f"<div class='card {'flag' if result['alarms'] else ''}'><b>{len(result['alarms'])}</b>alarm(s)</div>")
    out.append(f"<div class='card'><b>{result['samples']['added']}</b>new samples</div>"
               f"<div class='card'><b>{len(ch['appeared'])}</b>newly flagged class(es)</div>"
               f"<div class='card'><b>{result['labels_changed']['count']}</b>labels changed</div></div>")
    if result["alarms"]:
        out.append("<ul>" + "".join(f"<li><b>{e(a)}</b></li>" for a in result["alarms"]) + "</ul>")
    out.append("<h2>Clever-Hans classes</h2><table><tr><th>class</th><th>status</th><th>score old</th>"
               "<th>score new</th><th>members in common</th><th>pattern difference (σ)</th></tr>")
    for c in ch["candidates"]:
        out.append(f"<tr class='{'flagged' if c['status'] == 'new' else ''}'><td>{e(c['class'])}</td>"
                   f"<td>{e(c['status'])}</td><td>{fmt(c.get('score_old'))}</td><td>{fmt(c.get('score_new'))}</td>"
                   f"<td>{fmt(c.get('members_jaccard'))}</td><td>{fmt(c.get('pattern_distance'))}</td></tr>")
    out.append(f"</table><p>top {TOP}: {e(', '.join(ch['top_old']))} → {e(', '.join(ch['top_new']))}</p>")
    out.append("<h2>Samples and suspects</h2><table><tr><th></th><th>old</th><th>new</th><th>added</th>"
               "<th>removed</th><th>kept</th><th>added (first keys)</th></tr>")
    for label, c in (("samples", result["samples"]), ("artifact suspects", result["suspects"]["artifact"]),
                     ("mislabel suspects", result["suspects"]["mislabel"])):
        out.append(f"<tr><th>{label}</th><td>{c['old']}</td><td>{c['new']}</td><td>{c['added']}</td>"
                   f"<td>{c['removed']}</td><td>{c['kept']}</td><td>{e(', '.join(map(str, c['added_keys'][:8])))}</td></tr>")
    out.append("</table>")
    if result["labels_changed"]["examples"]:
        out.append("<h2>Labels changed</h2><table><tr><th>key</th><th>old</th><th>new</th></tr>" + "".join(
            f"<tr><td>{e(x['key'])}</td><td>{e(x['old'])}</td><td>{e(x['new'])}</td></tr>"
            for x in result["labels_changed"]["examples"]) + "</table>")
    if "evaluation" in result:
        ev = result["evaluation"]
        out.append("<h2>Evaluation against the injected ground truth</h2><table><tr><th></th><th>old</th>"
                   "<th>new</th></tr>" + "".join(f"<tr><th>{e(k)}</th><td>{fmt(ev['old'].get(k))}</td>"
                                                 f"<td>{fmt(v)}</td></tr>" for k, v in ev["new"].items()) + "</table>")
    out.append("<h2>Stage times</h2><table><tr><th>stage</th><th>old s</th><th>new s</th><th>ratio</th></tr>")
    for name, r in result["stages"].items():
        out.append(f"<tr class='{'flagged' if r.get('regression') else ''}'><td>{e(name)}</td><td>{fmt(r['old'])}</td>"
                   f"<td>{fmt(r['new'])}</td><td>{fmt(r.get('ratio'))}</td></tr>")
    out.append("</table></body></html>")
    path = Path(path)
    write_bytes_atomic(path, "".join(out).encode())
    return path
