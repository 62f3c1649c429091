"""The ``unhans`` command line. Heavy libraries are imported only inside commands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unhans.explainers.registry import COMPOSITES, METHODS

DESCRIPTION = """\
unhans audits a dataset and a classifier: LRP heatmaps for every sample (on a Dask
cluster), a check that the heatmaps track the model (pixel-flipping, parameter randomization),
spectral relevance analysis (SpRAy) per class, training dynamics (forgetting, cartography,
area under the margin), Clever-Hans and mislabel flags, a report.
"""


AUDIT_EPILOG = """\
your own data (instead of the embedded digits):
  unhans audit --input data/train --model mymodels:make_net --checkpoint net.pt --out runs/mine
  unhans audit my_audit.yaml --out runs/mine      (sections input:, model:, dynamics:, explain:, ...)
  --input is an image folder (ROOT/<class>/<image>, torchvision ImageFolder order), a Parquet table
  (columns path, label), a .npy (with --labels) or a .npz file; --model is package.module:callable
  (called with model.kwargs, then the --checkpoint state_dict) or a torchvision model name.
  With --trajectory DIR (the store of DynamicsRecorder in your training loop) the mislabel flags use
  your training dynamics; without it, the audited model's probabilities and features.
  sample_id is the position in the input's canonical order, key its path: both in every table.
"""


def _audit_parser(sub) -> None:
    p = sub.add_parser(
        "audit", help="run the whole audit (default: the embedded digits dataset; --input: your data)",
        description=(
            "Explain every sample with LRP on a Dask cluster, run SpRAy per class, flag Clever-Hans\n"
            "artifacts and likely mislabeled samples, and write DIR/report.html and DIR/summary.json.\n"
            "Without CONFIG or --input: the embedded digits, with a small CNN trained here while\n"
            "recording training dynamics. Finished stages are skipped when the same command runs again."
        ),
        epilog=AUDIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", default=None,
                   help="YAML config (default: built-in defaults, identical to configs/digits.yaml)")
    p.add_argument("--out", default="runs/audit", metavar="DIR", help="run directory (default: runs/audit)")
    p.add_argument("--seed", type=int, default=None, metavar="N",
                   help="override every seed (data, label noise, training, SpRAy)")
    p.add_argument("--reuse", default=None, metavar="OLD",
                   help="an earlier run: samples with the same key and content, explained by the same model and "
                        "settings, take their heatmaps and rows from OLD (copied or hard-linked); only new or changed "
                        "samples are explained. Image inputs keep OLD's sample ids (new images take the ids of "
                        "removed ones, then come last) unless --trajectory is given")
    p.add_argument("--reuse-rehash", action="store_true",
                   help="with --reuse: read and hash every image file again instead of trusting a file whose size "
                        "and modification time are unchanged since OLD listed it")
    g = p.add_argument_group("your own data and model (config sections input:, model:, dynamics:)")
    _add_input_options(g)
    g.add_argument("--model", metavar="SPEC", help="package.module:callable (model.factory) or a torchvision name (model.name)")
    g.add_argument("--model-kind", choices=["factory", "torchvision", "torchscript"],
                   help="model.kind (default: factory when SPEC has a ':', else torchvision)")
    g.add_argument("--checkpoint", metavar="FILE", help="model.checkpoint: your trained state_dict (or TorchScript file)")
    g.add_argument("--num-classes", type=int, metavar="K", help="model.kwargs.num_classes")
    g.add_argument("--trust-checkpoint", action="store_true", help="load the checkpoint with weights_only=False")
    g.add_argument("--trajectory", metavar="DIR", help="dynamics.trajectory: the store of your DynamicsRecorder")
    g = p.add_argument_group("explanation and cluster")
    g.add_argument("--method", choices=METHODS, help="explain.method (default lrp)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: start a LocalCluster)")
    g.add_argument("--workers", type=int, default=None, metavar="N", help="LocalCluster worker processes (config: cluster.workers)")
    p.add_argument("--top-k", type=int, default=None, metavar="N",
                   help="report.top_k: classes shown in detail in report.html (default 10; every class has a row)")
    p.add_argument("--force", action="store_true", help="delete DIR's earlier results and start over")
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage messages")
    p.set_defaults(func=_cmd_audit)


def _add_input_options(g) -> None:
    g.add_argument("--input", metavar="PATH", help="input.path: image folder, Parquet table, .npy or .npz file")
    g.add_argument("--input-kind", choices=["npy", "npz", "imagefolder", "parquet"],
                   help="input.kind (default: from PATH: a folder, .parquet, .npy or .npz)")
    g.add_argument("--labels", metavar="PATH", help="input.labels_path: labels .npy for an .npy input")
    g.add_argument("--transform-size", type=int, metavar="N", help="input.transform.size: resize images to N x N")
    g.add_argument("--grayscale", action="store_true", help="input.transform.grayscale: decode images as one channel")


EXPLAIN_EPILOG = """\
inputs (input.kind):
  npy          images .npy (N, C, H, W) or (N, C, L), read by range; labels .npy (N,) via --labels
  npz          one .npz with arrays 'images' and 'labels' (input.images_key / labels_key); loaded whole
  imagefolder  ROOT/<class>/<image>: classes sorted by folder name (like torchvision's ImageFolder);
               decoding via input.transform: size, center_crop, grayscale, mean, std
  parquet      a table with columns 'path' and 'label' (input.path_column / label_column); paths
               relative to input.root or to the table's folder

model formats (model.kind):
  factory      package.module:callable returning an nn.Module (model.kwargs), + --checkpoint state_dict
  torchvision  a torchvision model name (resnet50, vgg16_bn, ...; model.kwargs e.g. num_classes), + state_dict
  torchscript  a TorchScript file (--checkpoint); gradient methods only (LRP needs an eager nn.Module)
  State dicts load with torch.load(weights_only=True); --trust-checkpoint lifts that for files you trust.

cluster:
  default      a LocalCluster of --workers processes, cluster.threads_per_worker threads each
  --scheduler  an existing Dask scheduler (tcp://host:8786); workers need unhans installed and the input,
               the model and --out on a shared filesystem

bad input:
  unreadable, corrupt or wrongly shaped samples and NaN/Inf inputs or outputs are quarantined (status and
  reason in tables/samples); the command then exits with status 3 unless --allow-quarantine. Config and
  model errors stop before any work. Rerunning the same command resumes where a killed run stopped.

example:
  unhans explain --input-kind imagefolder --input data/train --transform-size 64 \\
      --model-kind torchvision --model resnet18 --num-classes 10 --checkpoint resnet18.pt --out runs/x
"""


def _explain_parser(sub) -> None:
    p = sub.add_parser(
        "explain", help="explain every sample of your data with your model (heatmaps + sample table)",
        description="Explain every sample of an input with a model on a Dask cluster; heatmaps go to "
                    "DIR/heatmaps.zarr and one row per sample to DIR/tables/samples. CONFIG is a YAML file with "
                    "sections input, model, explain, cluster; the options below override its keys.",
        epilog=EXPLAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", default=None, help="YAML config (optional when the options say enough)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory")
    g = p.add_argument_group("input")
    _add_input_options(g)
    g = p.add_argument_group("model")
    g.add_argument("--model-kind", choices=["factory", "torchvision", "torchscript"], help="model.kind (default factory)")
    g.add_argument("--model", metavar="SPEC", help="model.factory (package.module:callable) or model.name (torchvision)")
    g.add_argument("--checkpoint", metavar="FILE", help="model.checkpoint: state_dict file, or the TorchScript file")
    g.add_argument("--num-classes", type=int, metavar="K", help="model.kwargs.num_classes")
    g.add_argument("--trust-checkpoint", action="store_true", help="load the checkpoint with weights_only=False")
    g = p.add_argument_group("explanation")
    g.add_argument("--method", choices=METHODS, help="explain.method (default lrp)")
    g.add_argument("--composite", choices=COMPOSITES, help="explain.composite for LRP (default epsilon_plus_flat)")
    g = p.add_argument_group("cluster")
    g.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler (default: start a LocalCluster)")
    g.add_argument("--workers", type=int, metavar="N", help="LocalCluster worker processes (default 2)")
    p.add_argument("--allow-quarantine", action="store_true", help="exit 0 even when samples were quarantined")
    p.add_argument("--force", action="store_true", help="delete DIR's earlier results and start over")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_explain)


def _dynamics_parser(sub) -> None:
    p = sub.add_parser(
        "dynamics", help="statistics (AUM, cartography, forgetting, mislabel flags) from a stored trajectory; --html "
                         "[--watch] to follow a training run",
        description="Compute per-sample training-dynamics statistics from RUN/dynamics and print a summary; "
                    "--out writes them as Parquet.",
    )
    p.add_argument("run", metavar="RUN", help="run directory holding a recorded trajectory")
    p.add_argument("--out", default=None, metavar="FILE", help="write the statistics table to this Parquet file")
    p.add_argument("--html", default=None, metavar="FILE",
                   help="write a page with the data map and the current top mislabel suspects (complete epochs only; "
                        "works while a training loop is still appending)")
    p.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                   help="with --html: re-render whenever new epochs are complete, checking every SECONDS (Ctrl-C stops)")
    p.set_defaults(func=_cmd_dynamics)


def _compare_parser(sub) -> None:
    p = sub.add_parser(
        "compare", help="what changed between two audit runs (exit 1 on alarms, for nightly jobs)",
        description="Compare two finished audit runs by sample key: Clever-Hans classes that appeared or "
                    "disappeared (findings matched by pattern and members), suspects added/removed/kept, new and "
                    "removed samples, changed labels, the evaluation block, stage times. Prints a short summary; "
                    "exits 1 when an alarm condition (--fail-on) holds, else 0.",
    )
    p.add_argument("old", metavar="OLD", help="the earlier run directory")
    p.add_argument("new", metavar="NEW", help="the later run directory")
    p.add_argument("--json", default=None, metavar="FILE", help="write the whole comparison as JSON")
    p.add_argument("--html", default=None, metavar="FILE", help="write a self-contained HTML page")
    p.add_argument("--fail-on", default="new-flag,suspects:25%,untrusted", metavar="LIST",
                   help="alarm conditions, comma-separated: new-flag (a class newly flagged), suspects:PCT "
                        "(artifact or mislabel suspects grew by more than PCT), slower (a stage 50%% and 1 s "
                        "slower), untrusted (the heatmaps failed their check); none = never "
                        "(default: new-flag,suspects:25%%,untrusted)")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args) -> int:
    from .comparison import FailOn, compare_runs, summary_text, write_html

    result = compare_runs(args.old, args.new, FailOn.parse(args.fail_on))
    print(summary_text(result))
    if args.json:
        from unhans.storage.atomic import write_json_atomic

        write_json_atomic(Path(args.json), result)
        print(f"json: {args.json}")
    if args.html:
        print(f"html: {write_html(result, args.html)}")
    return result["exit_code"]


def _export_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="write a run in another tool's format (virelay: the interactive SpRAy viewer)",
        description="Write a finished run as a ViRelAy project (YAML, label map, dataset/attribution/analysis HDF5 "
                    "with every class's spectral and UMAP embeddings, eigenvalues and clusterings for every k); "
                    "open it with `virelay DIR/project.yaml`. Needs h5py (pip install \"unhans[virelay]\").",
    )
    p.add_argument("format", choices=["virelay"], help="the target format")
    p.add_argument("run", metavar="RUN", help="a finished audit run directory")
    p.add_argument("out", metavar="DIR", help="where the project is written")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from .virelay_export import export_virelay

    path = export_virelay(args.run, args.out)
    print(f"ViRelAy project: {path} (open with: virelay {path})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unhans", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"unhans {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _audit_parser(sub)
    _explain_parser(sub)
    _dynamics_parser(sub)
    _compare_parser(sub)
    _export_parser(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("unhans")
    except PackageNotFoundError:
        return "unknown"


def _input_kind(path: str) -> str:
    p = Path(path)
    if p.is_dir():
        return "imagefolder"
    return {".parquet": "parquet", ".npz": "npz"}.get(p.suffix.lower(), "npy")


def _apply_options(data: dict, args) -> dict:
    """The config mapping ``data`` with the command-line options written into their dotted keys."""
    input_kind = args.input_kind or ((data.get("input") or {}).get("kind")) or (
        _input_kind(args.input) if args.input else None)
    model_kind = args.model_kind or (data.get("model") or {}).get("kind")
    if model_kind is None and args.model:
        model_kind = "factory" if ":" in args.model else "torchvision"
    model_key = "model.name" if model_kind == "torchvision" else "model.factory"
    for dotted, value in [
        ("input.path", args.input), ("input.kind", input_kind if (args.input or args.input_kind) else None),
        ("input.labels_path", args.labels), ("input.transform.size", args.transform_size),
        ("input.transform.grayscale", True if args.grayscale else None),
        ("model.kind", model_kind if (args.model or args.model_kind) else None), (model_key, args.model),
        ("model.checkpoint", args.checkpoint), ("model.kwargs.num_classes", args.num_classes),
        ("model.trust_checkpoint", True if args.trust_checkpoint else None), ("explain.method", args.method),
        ("explain.composite", getattr(args, "composite", None)), ("cluster.scheduler", args.scheduler),
        ("cluster.workers", args.workers), ("dynamics.trajectory", getattr(args, "trajectory", None)),
        ("report.top_k", getattr(args, "top_k", None)),
    ]:
        _set(data, dotted, value)
    return data


def _cmd_audit(args) -> int:
    from .audit import run_audit
    from .config import from_dict, read_yaml

    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    data = _apply_options(read_yaml(args.config) if args.config else {}, args)
    config = from_dict(data)
    if args.seed is not None:
        config = config.with_seed(args.seed)
    if args.reuse_rehash and args.reuse is None:
        raise ValueError("--reuse-rehash needs --reuse OLD")
    summary = run_audit(config, args.out, force=args.force, quiet=args.quiet, reuse=args.reuse,
                        reuse_rehash=args.reuse_rehash)
    from unhans.storage.layout import RunLayout

    layout = RunLayout(Path(args.out))
    print(f"report:  {layout.report}")
    print(f"summary: {layout.summary}")
    ranking = summary["clever_hans"]["class_ranking"]
    flagged = summary["clever_hans"]["flagged_clusters"]
    print(f"Clever-Hans: {len(flagged)} flagged class(es)"
          + (f" ({', '.join(str(f.get('class_name', f['class_id'])) for f in flagged)})" if flagged else "")
          + (f"; top of the ranking: {ranking[0].get('class_name', ranking[0]['class_id'])}" if ranking else "")
          + f"; {summary['clever_hans']['artifact_suspects']} artifact suspects, "
          f"{summary['mislabel']['suspects']} mislabel suspects, {summary['samples']['quarantined']} quarantined")
    check = summary.get("faithfulness")
    if check:
        randomized = (f", randomized-model heatmaps correlate {check['randomization']['final']:.2f}"
                      if check.get("randomization") else "")
        state = "trustworthy" if check["trustworthy"] else "NOT TRUSTWORTHY (" + "; ".join(check["warnings"]) + ")"
        print(f"heatmaps: {state}: AOPC {check['aopc']['explainer']:.3f} vs random {check['aopc']['random']:.3f}"
              + randomized, file=sys.stdout if check["trustworthy"] else sys.stderr)
    if "evaluation" in summary:
        ev = summary["evaluation"]
        print("evaluation against injected ground truth: " + ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in ev.items()))
    return 0


def _set(data: dict, dotted: str, value) -> None:
    if value is None:
        return
    *parents, last = dotted.split(".")
    for key in parents:
        if data.get(key) is None:  # absent, or an empty YAML section
            data[key] = {}
        data = data[key]
    data[last] = value


def _cmd_explain(args) -> int:
    from .config import ExplainRunConfig, from_dict, read_yaml

    data = _apply_options(read_yaml(args.config) if args.config else {}, args)
    config = from_dict(data, ExplainRunConfig)
    from .explain_command import run_explain

    from unhans.storage.layout import RunLayout

    result = run_explain(config, args.out, force=args.force, quiet=args.quiet)
    layout = RunLayout(Path(args.out))
    print(f"heatmaps: {layout.heatmaps}")
    print(f"samples:  {layout.table('samples')}")
    if result["quarantined"]:
        print(f"{result['quarantined']} sample(s) quarantined:", file=sys.stderr)
        for line in result["quarantine_examples"]:
            print(f"  {line}", file=sys.stderr)
        if result["quarantined"] > len(result["quarantine_examples"]):
            print(f"  ... see the 'status' and 'error' columns of {layout.table('samples')}",
                  file=sys.stderr)
        if not args.allow_quarantine:
            return 3
    return 0


def _cmd_dynamics(args) -> int:
    import numpy as np

    from .config import ConfigError

    from unhans.spray.dynamics import load_trajectory, statistics_from_trajectory

    if args.watch is not None:
        if not args.html:
            raise ConfigError("--watch needs --html FILE")
        if args.watch <= 0:
            raise ConfigError(f"--watch must be a positive number of seconds, got {args.watch}")
        from .report.training_monitor import watch

        watch(args.run, args.html, args.watch)
        return 0
    if args.html:
        from .report.training_monitor import render_training_page

        epochs = render_training_page(args.run, args.html)
        print(f"html: {args.html} ({epochs} complete epochs)")
        if epochs == 0:
            return 0
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


def _is_user_error(exc: Exception) -> bool:
    """Errors about the user's input, config or files: a one-line message, no traceback."""
    from .config import ConfigError

    if isinstance(exc, (ConfigError, FileNotFoundError, FileExistsError, ConnectionError)):
        return True
    names = {base.__name__ for base in type(exc).__mro__}
    return bool(names & {"SourceError", "ModelLoadError", "UnsupportedModelError", "RunMismatchError",
                         "TrajectoryMismatchError", "CompareError"})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except Exception as exc:
        if not _is_user_error(exc):
            raise
        print(f"unhans {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unhans {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
