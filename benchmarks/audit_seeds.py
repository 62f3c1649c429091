"""Detection quality of `unhans audit` over seeds and defect scenarios on the embedded digits.

Runs the full audit (training, Dask explain stage, SpRAy, flags) for every scenario and seed
and prints the evaluation table, the flagged and the counterfactually confirmed classes, the
pass count against issue #2's bar (for `no_artifact`: nothing flagged, nothing confirmed),
and the wall time.

    python benchmarks/audit_seeds.py                      # all scenarios, seeds 0-4 (~10 min on 2 cores)
    python benchmarks/audit_seeds.py --scenarios default no_artifact --seeds 0 1
    python benchmarks/audit_seeds.py --architecture vit --scenarios default   # the small ViT (~7 min)

Ends with one line: RESULT default=<n>/<seeds> default_artifact=<n>/<seeds> no_artifact=<n>/<seeds> ...
(``<scenario>_artifact``: poisoned class ranked 1, artifact precision and recall >= 0.9, the mislabel bar left out.)
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

SCENARIOS = {
    "default": {},
    "no_artifact": {"dataset": {"artifact": {"fraction": 0.0}}},
    "class7_top_right_30": {"dataset": {"artifact": {"class": 7, "fraction": 0.3, "corner": "top-right"}}},
    "class5_bottom_right_asym": {"dataset": {"artifact": {"class": 5, "corner": "bottom-right"},
                                             "label_noise": {"kind": "asymmetric"}}},
    "class0_top_left_30": {"dataset": {"artifact": {"class": 0, "fraction": 0.3, "corner": "top-left"}}},
    "tag_30": {"dataset": {"artifact": {"fraction": 0.3}}},
    "asymmetric_10": {"dataset": {"label_noise": {"kind": "asymmetric"}}},
}


def passes(ev: dict) -> bool:
    """Issue #2's bar for a run with an artifact."""
    return (ev["artifact_class_rank"] == 1 and (ev["artifact_precision"] or 0) >= 0.9
            and (ev["artifact_recall"] or 0) >= 0.9 and ev["mislabel_auroc"] >= 0.98)


def artifact_found(ev: dict) -> bool:
    """The artifact half of the bar: poisoned class ranked 1, artifact precision and recall >= 0.9."""
    return (ev["artifact_class_rank"] == 1 and (ev["artifact_precision"] or 0) >= 0.9
            and (ev["artifact_recall"] or 0) >= 0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--umap", action="store_true", help="also compute the UMAP maps (slower)")
    parser.add_argument("--keep", metavar="DIR", help="keep the run directories here")
    parser.add_argument("--architecture", choices=["cnn", "vit"], default="cnn",
                        help="the model the audit trains (training.architecture; default cnn)")
    args = parser.parse_args()

    from unhans.pipeline.audit import run_audit
    from unhans.pipeline.config import from_dict

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="unhans-bench-"))
    keys = ["artifact_class_rank", "artifact_precision", "artifact_recall", "mislabel_auroc", "mislabel_precision_at_n"]
    print(f"{'scenario':26s} seed " + " ".join(f"{k[:18]:>18s}" for k in keys) + "  flagged confirmed seconds")
    result = {}
    for name in args.scenarios:
        ok = found = 0
        for seed in args.seeds:
            data = {**SCENARIOS[name], "spray": {"umap": args.umap}, "training": {"architecture": args.architecture}}
            config = from_dict(data).with_seed(seed)
            start = time.perf_counter()
            summary = run_audit(config, root / f"{name}-s{seed}", quiet=True, force=True)
            seconds = time.perf_counter() - start
            ev = summary["evaluation"]
            ch = summary["clever_hans"]
            flagged = [e["class_id"] for e in ch["flagged_clusters"]]
            confirmed = [c["class_id"] for c in ch["confirmations"] if c["confirmed"]]
            good = (not flagged and not confirmed) if name == "no_artifact" else passes(ev)
            ok += good
            found += name != "no_artifact" and artifact_found(ev)
            cells = " ".join(f"{v:>18.3f}" if isinstance(v, float) else f"{str(v):>18s}" for v in (ev[k] for k in keys))
            print(f"{name:26s} {seed:4d} {cells}  {str(flagged):7s} {str(confirmed):9s} {seconds:7.1f}  "
                  f"{'pass' if good else 'FAIL'}", flush=True)
        result[name] = f"{ok}/{len(args.seeds)}"
        if name != "no_artifact":
            result[f"{name}_artifact"] = f"{found}/{len(args.seeds)}"
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in [("architecture", args.architecture), *result.items()]))


if __name__ == "__main__":
    main()
