"""Clever-Hans detection beyond a fixed stamp: every artifact kind of the embedded digits, over seeds.

Issue #12. Scenarios (each artifact on 40% of its class, 10% symmetric label noise, the default):
``stamp`` (class 3, bottom-left), ``moving`` (class 3, anywhere), ``scaled`` (class 3, 0.6-1.6x,
bottom-left), ``frame`` (class 3, a line along the top edge), ``texture`` (class 3, background
stripes), ``two_classes`` (a stamp on class 5 and a moving tag on class 3), and a ``control``
without any artifact, for seeds 0-4. Every run is the full ``unhans audit`` (training, Dask
explain stage, SpRAy, flags; UMAP maps off for speed).

A scenario passes in a seed when every poisoned class ranks within the top (number of poisoned
classes) of the Clever-Hans ranking, artifact precision and recall are >= 0.9 and the per-sample
artifact score ranks the tagged samples with AUROC >= 0.95; a control passes when nothing is
flagged. Two tables come from the same runs: the audit as it is (per class the better of the
fixed-window and the recurring-pattern candidate, ``spray/recurring_patterns.py``), and
pixel-space detection alone (the fixed-window candidate from SpRAy clusters of the input
heatmaps, as before issue #12: its class ranking, its flags at score 1.0, its in-class carriers
as suspects, its per-sample ``pixel_artifact_score``). The ``use`` column is how much the
trained model takes each shortcut (``evaluation.artifact_use``: the artifact pasted into 200
other-class images, the change in the fraction predicted as the poisoned class). A shortcut the
model does not take leaves little for any explanation to find.

    python benchmarks/artifact_suite.py                          # all scenarios, seeds 0-4
    python benchmarks/artifact_suite.py --scenarios moving control --seeds 0 1

Ends with: RESULT stamp=<n>/5 moving=<n>/5 scaled=<n>/5 frame=<n>/5 texture=<n>/5
two_classes=<n>/5 controls=<n>/5 pixel_<scenario>=<n>/5 ... min_auroc_<scenario>=<x> ...
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

FRACTION = 0.4
SCENARIOS = {
    "stamp": [{"class": 3, "kind": "stamp"}],
    "moving": [{"class": 3, "kind": "moving"}],
    "scaled": [{"class": 3, "kind": "scaled"}],
    "frame": [{"class": 3, "kind": "frame", "edge": "top"}],
    "texture": [{"class": 3, "kind": "texture"}],
    "two_classes": [{"class": 5, "kind": "stamp", "corner": "bottom-right"}, {"class": 3, "kind": "moving"}],
    "control": [{"class": 3, "fraction": 0.0}],
}


def passes(ev: dict, poisoned: int) -> bool:
    ranks = ev["artifact_class_ranks"]
    return (len(ranks) == poisoned and max(ranks) <= poisoned and (ev["artifact_precision"] or 0) >= 0.9
            and (ev["artifact_recall"] or 0) >= 0.9 and (ev["artifact_score_auroc"] or 0) >= 0.95)


def pixel_only(run: Path, ev: dict) -> tuple[dict, list[int]]:
    """The evaluation of the fixed-window (pixel-space) candidates alone, from the same run's files."""
    import json

    import numpy as np

    from unhans.pipeline.evaluation import evaluate
    from unhans.spray.clever_hans import FLAG_SCORE
    from unhans.storage import read_table

    classes = json.loads((run / "spray.json").read_text())["classes"]
    cands = [c["pixel_candidate"] for c in classes if c.get("pixel_candidate")]
    scores = {c["class_id"]: 0.0 for c in classes} | {c["class_id"]: c["score"] for c in cands}
    ranking = sorted(scores, key=lambda k: (-scores[k], k))
    spray = read_table(run, "spray").sort_by("sample_id")
    truth = read_table(run, "ground_truth").sort_by("sample_id")
    tagged = truth.column("tagged").to_numpy(zero_copy_only=False)
    suspect = np.zeros(len(tagged), bool)
    flagged = [c["class_id"] for c in cands if c["score"] >= FLAG_SCORE]
    for c in cands:
        if c["score"] >= FLAG_SCORE:
            suspect[c["carriers"]] = True
    out = evaluate(class_ranking=ranking, artifact_classes=[k for k in ev["_poisoned"]], artifact_suspect=suspect,
                   artifact_score=spray.column("pixel_artifact_score").to_numpy().astype(float), tagged=tagged,
                   mislabel_score=np.zeros(len(tagged)), flipped=np.zeros(len(tagged), bool))
    return out, flagged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--keep", metavar="DIR", help="keep the run directories here")
    args = parser.parse_args()

    from unhans.pipeline.audit import run_audit
    from unhans.pipeline.config import from_dict

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="unhans-artifacts-"))
    header = (f"{'scenario':12s} seed {'ranks':>8s} {'precision':>9s} {'recall':>7s} {'auroc':>6s} {'ap':>6s} "
              f"{'use':>12s}  flagged  seconds")
    rows = {"audit": [], "pixel": []}
    result, worst, passed = {}, {}, {"audit": {}, "pixel": {}}

    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    print("audit (fixed-window or recurring-pattern candidate per class)")
    print(header)
    for name in args.scenarios:
        artifacts = [{"fraction": FRACTION, **a} for a in SCENARIOS[name]]
        poisoned = sum(a["fraction"] > 0 for a in artifacts)
        for seed in args.seeds:
            data = {"dataset": {"artifact": artifacts if len(artifacts) > 1 else artifacts[0]}, "spray": {"umap": False}}
            start = time.perf_counter()
            run = root / f"{name}-s{seed}"
            summary = run_audit(from_dict(data).with_seed(seed), run, quiet=True, force=True)
            seconds = time.perf_counter() - start
            ev = summary["evaluation"]
            ev["_poisoned"] = [a["class"] for a in artifacts if a["fraction"] > 0]
            flagged = [e["class_id"] for e in summary["clever_hans"]["flagged_clusters"]]
            pix, pix_flagged = pixel_only(run, ev)
            for kind, e, fl in (("audit", ev, flagged), ("pixel", pix, pix_flagged)):
                good = not fl if poisoned == 0 else passes(e, poisoned)
                passed[kind][name] = passed[kind].get(name, 0) + good
                line = (f"{name:12s} {seed:4d} {str(e['artifact_class_ranks']):>8s} {f(e['artifact_precision']):>9s} "
                        f"{f(e['artifact_recall']):>7s} {f(e['artifact_score_auroc']):>6s} {f(e['artifact_score_ap']):>6s} "
                        f"{','.join(f'{u:.2f}' for u in ev['artifact_use']):>12s}  "
                        f"{str(fl):7s} {seconds:7.1f}  {'pass' if good else 'FAIL'}")
                rows[kind].append(line)
                if kind == "audit":
                    print(line, flush=True)
                    if e["artifact_score_auroc"] is not None:
                        worst[name] = min(worst.get(name, 1.0), e["artifact_score_auroc"])
            if not args.keep:
                shutil.rmtree(run, ignore_errors=True)
    print("\npixel-space detection alone (fixed-window candidates from SpRAy clusters of the input heatmaps)")
    print(header)
    print("\n".join(rows["pixel"]))
    for kind, prefix in (("audit", ""), ("pixel", "pixel_")):
        for name, ok in passed[kind].items():
            result[prefix + ("controls" if name == "control" else name)] = f"{ok}/{len(args.seeds)}"
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items())
          + "".join(f" min_auroc_{k}={v:.3f}" for k, v in worst.items()))


if __name__ == "__main__":
    main()
