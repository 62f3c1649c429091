"""The ``unhans`` command line. Heavy libraries are imported only inside commands."""
from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
unhans audits a dataset and a classifier: LRP heatmaps for every sample (on a Dask
cluster), spectral relevance analysis (SpRAy) per class, training dynamics (forgetting,
cartography, area under the margin), Clever-Hans and mislabel flags, a report.
"""


def _audit_parser(sub) -> None:
    p = sub.add_parser(
        "audit", help="run the whole audit (default: the embedded digits dataset)",
        description=(
            "Train a small CNN while recording training dynamics, explain every training sample with "
            "LRP on a Dask cluster, run SpRAy per class, flag Clever-Hans artifacts and likely "
            "mislabeled samples, and write DIR/report.html and DIR/summary.json. Finished stages "
            "are skipped when the same command runs again."
        ),
    )
    p.add_argument("config", nargs="?", default=None,
                   help="YAML config (default: built-in defaults, identical to configs/digits.yaml)")
    p.add_argument("--out", default="runs/audit", metavar="DIR", help="run directory (default: runs/audit)")
    p.add_argument("--seed", type=int, default=None, metavar="N",
                   help="override every seed (data, label noise, training, SpRAy)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: start a LocalCluster)")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="LocalCluster worker processes (config: cluster.workers)")
    p.add_argument("--force", action="store_true", help="delete DIR's earlier results and start over")
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage messages")
    p.set_defaults(func=_cmd_audit)


def _dynamics_parser(sub) -> None:
    p = sub.add_parser(
        "dynamics", help="statistics (AUM, cartography, forgetting, mislabel flags) from a stored trajectory",
        description="Compute per-sample training-dynamics statistics from RUN/dynamics and print a summary; "
                    "--out writes them as Parquet.",
    )
    p.add_argument("run", metavar="RUN", help="run directory holding a recorded trajectory")
    p.add_argument("--out", default=None, metavar="FILE", help="write the statistics table to this Parquet file")
    p.set_defaults(func=_cmd_dynamics)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unhans", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"unhans {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _audit_parser(sub)
    _dynamics_parser(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("unhans")
    except PackageNotFoundError:
        return "unknown"


def _cmd_audit(args) -> int:
    from .audit import run_audit
    from .config import load_config

    config = load_config(args.config)
    if args.seed is not None:
        config = config.with_seed(args.seed)
    if args.scheduler:
        config.cluster.scheduler = args.scheduler
    if args.workers is not None:
        if args.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {args.workers}")
        config.cluster.workers = args.workers
    summary = run_audit(config, args.out, force=args.force, quiet=args.quiet)
    from pathlib import Path

    out = Path(args.out)
    print(f"report:  {out / 'report.html'}")
    print(f"summary: {out / 'summary.json'}")
    if "evaluation" in summary:
        ev = summary["evaluation"]
        print("evaluation against injected ground truth: " + ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in ev.items()))
    return 0


def _cmd_dynamics(args) -> int:
    import numpy as np

    from spray.dynamics import load_trajectory, statistics_from_trajectory

    table = statistics_from_trajectory(load_trajectory(args.run))
    if args.out:
        import pyarrow.parquet as pq

        pq.write_table(table, args.out)
        print(f"wrote {table.num_rows} rows to {args.out}")
    score = table.column("mislabel_score").to_numpy(zero_copy_only=False)
    suspect = table.column("mislabel_suspect").to_numpy(zero_copy_only=False)
    print(f"{table.num_rows} samples, {int(suspect.sum())} mislabel suspects, "
          f"{int(table.column('ambiguous').to_numpy(zero_copy_only=False).sum())} ambiguous")
    for i in np.argsort(-score)[:10]:
        print(f"  sample {int(table.column('sample_id')[i])}: mislabel_score={score[i]:.3f} "
              f"aum={table.column('aum')[i].as_py():.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from .config import ConfigError

    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"unhans {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unhans {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
