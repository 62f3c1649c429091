"""``unhans explain``: explain every sample of an input with a given model, into a run directory.

The same explain stage as the audit's; here the input and the model come from the user and
the command stops at the heatmaps and the sample table.
"""
from __future__ import annotations

import time
from pathlib import Path

from .config import ExplainRunConfig, to_dict
from .model_loading import absolute_model
from .image_index import build_image_index
from .sources import absolute_input
from .stages.data import input_identity, model_identity
from .stages.explain import STAGE, ExplainJob, check_job, quarantine_summary, run_explain_stage


def explain_job(config: ExplainRunConfig, run: Path) -> ExplainJob:
    """The picklable job of ``config`` with absolute paths (image inputs get their index in ``run``)."""
    from unhans.storage import RunLayout

    layout = RunLayout(run.resolve())
    spec = absolute_input(config.input)
    if spec.kind in ("imagefolder", "parquet"):
        build_image_index(spec, layout.image_index)
    return ExplainJob(run_dir=str(layout.root), input=spec, model=absolute_model(config.model),
                      explain=config.explain, threads=config.cluster.threads_per_worker)


def run_explain(config: ExplainRunConfig, out: str | Path, *, force: bool = False, quiet: bool = False) -> dict:
    """Explain every sample; returns {'samples', 'quarantined', 'quarantine_examples', 'seconds', ...}."""
    from unhans.storage import init_run, open_run, prepare_run_dir, update_manifest

    from .cluster import dask_client

    run = Path(out)
    prepare_run_dir(run, force=force)
    markers = init_run(run, {"command": "explain", **to_dict(config)})
    job = explain_job(config, run)
    start = time.perf_counter()
    if not markers.stage_done(STAGE):
        num_samples, sample_shape, num_outputs = check_job(job)  # fails here, before any work, on bad input or model
        update_manifest(run, dataset=input_identity(job, num_samples, sample_shape),
                        model=model_identity(job.model, num_outputs))
        with dask_client(config.cluster) as client:
            if not quiet:
                where = config.cluster.scheduler or f"LocalCluster, {config.cluster.workers} workers"
                print(f"explain: {num_samples} samples, {config.explain.method} on {where}", flush=True)
            counts = run_explain_stage(job, client, num_samples=num_samples, sample_shape=sample_shape,
                                       progress=not quiet)
        markers.mark_stage(STAGE, seconds=time.perf_counter() - start, **counts)
    quarantined, examples = quarantine_summary(run)
    return {"run": str(run), "samples": int(open_run(run).manifest["dataset"]["num_samples"]),
            "quarantined": quarantined, "quarantine_examples": examples,
            "seconds": (markers.stage_info(STAGE) or {}).get("seconds")}
