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
flagged. The table printed is today's detector, pixel-space SpRAy of the input heatmaps; its
``use`` column is how much the trained model takes each shortcut (``evaluation.artifact_use``:
the artifact pasted into 200 other-class images, the change in the fraction predicted as the
poisoned class). A shortcut the model does not take cannot be found by explaining it.

    python benchmarks/artifact_suite.py                          # all scenarios, seeds 0-4
    python benchmarks/artifact_suite.py --scenarios moving control --seeds 0 1

Ends with: RESULT stamp=<n>/5 moving=<n>/5 scaled=<n>/5 frame=<n>/5 texture=<n>/5
two_classes=<n>/5 controls=<n>/5 min_auroc_<scenario>=<x> ...
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--keep", metavar="DIR", help="keep the run directories here")
    args = parser.parse_args()

    from unhans.pipeline.audit import run_audit
    from unhans.pipeline.config import from_dict

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="unhans-artifacts-"))
    print("pixel-space detection (SpRAy of the input heatmaps, today's detector)")
    print(f"{'scenario':12s} seed {'ranks':>8s} {'precision':>9s} {'recall':>7s} {'auroc':>6s} {'ap':>6s} "
          f"{'use':>12s}  flagged  seconds")
    result, worst = {}, {}
    for name in args.scenarios:
        ok = 0
        artifacts = [{"fraction": FRACTION, **a} for a in SCENARIOS[name]]
        poisoned = sum(a["fraction"] > 0 for a in artifacts)
        for seed in args.seeds:
            data = {"dataset": {"artifact": artifacts if len(artifacts) > 1 else artifacts[0]}, "spray": {"umap": False}}
            start = time.perf_counter()
            summary = run_audit(from_dict(data).with_seed(seed), root / f"{name}-s{seed}", quiet=True, force=True)
            seconds = time.perf_counter() - start
            ev = summary["evaluation"]
            flagged = [e["class_id"] for e in summary["clever_hans"]["flagged_clusters"]]
            good = not flagged if poisoned == 0 else passes(ev, poisoned)
            ok += good
            if ev["artifact_score_auroc"] is not None:
                worst[name] = min(worst.get(name, 1.0), ev["artifact_score_auroc"])

            def f(v):
                return "n/a" if v is None else f"{v:.3f}"

            print(f"{name:12s} {seed:4d} {str(ev['artifact_class_ranks']):>8s} {f(ev['artifact_precision']):>9s} "
                  f"{f(ev['artifact_recall']):>7s} {f(ev['artifact_score_auroc']):>6s} {f(ev['artifact_score_ap']):>6s} "
                  f"{','.join(f'{u:.2f}' for u in ev['artifact_use']):>12s}  "
                  f"{str(flagged):7s} {seconds:7.1f}  {'pass' if good else 'FAIL'}", flush=True)
        result["controls" if name == "control" else name] = f"{ok}/{len(args.seeds)}"
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items())
          + "".join(f" min_auroc_{k}={v:.3f}" for k, v in worst.items()))


if __name__ == "__main__":
    main()
