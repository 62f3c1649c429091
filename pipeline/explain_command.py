"""``unhans explain``: explain every sample of an input with a given model, into a run directory.

The same explain stage as the audit's; here the input and the model come from the user.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path

from .config import ExplainRunConfig, to_dict
from .explain_stage import STAGE, ExplainJob, check_job, quarantine_summary, run_explain_stage
from .model_spec import ModelSpec
from .sources import INDEX_FILE, SourceSpec, TransformSpec, build_image_index


def _abs(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def source_spec(config: ExplainRunConfig, run: Path) -> SourceSpec:
    """The picklable source of ``config.input`` with absolute paths (and an image index in ``run``)."""
    cfg = config.input
    t = cfg.transform
    spec = SourceSpec(
        kind=cfg.kind, path=_abs(cfg.path), labels_path=_abs(cfg.labels_path), images_key=cfg.images_key,
        labels_key=cfg.labels_key, path_column=cfg.path_column, label_column=cfg.label_column, root=_abs(cfg.root),
        transform=TransformSpec(size=t.size, center_crop=t.center_crop, grayscale=t.grayscale,
                                mean=tuple(t.mean) if t.mean else None, std=tuple(t.std) if t.std else None),
    )
    if spec.kind in ("imagefolder", "parquet"):
        index = build_image_index(spec, run.resolve() / "inputs" / INDEX_FILE)
        spec = replace(spec, index=str(index))
    return spec


def model_spec(config: ExplainRunConfig) -> ModelSpec:
    cfg = config.model
    return ModelSpec(kind=cfg.kind, factory=cfg.factory, name=cfg.name, checkpoint=_abs(cfg.checkpoint),
                     kwargs=dict(cfg.kwargs or {}), trust_checkpoint=cfg.trust_checkpoint)


def _file_fingerprint(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def run_explain(config: ExplainRunConfig, out: str | Path, *, force: bool = False, quiet: bool = False) -> dict:
    """Explain every sample; returns {'samples', 'quarantined', 'quarantine_examples', 'seconds', ...}."""
    import shutil

    from unhans.storage import init_run, update_manifest

    from .cluster import dask_client

    run = Path(out)
    if force and run.exists():
        if not (run / "manifest.json").exists() and any(run.iterdir()):
            raise FileExistsError(f"{run} is not an unhans run directory; refusing to delete it with --force")
        shutil.rmtree(run)
    if run.exists() and not run.is_dir():
        raise FileExistsError(f"--out {run} exists and is not a directory")
    markers = init_run(run, {"command": "explain", **to_dict(config)})
    source, model = source_spec(config, run), model_spec(config)
    job = ExplainJob(
        run_dir=str(run.resolve()), source=source, model=model, method=config.explain.method,
        composite=config.explain.composite, target=config.explain.target, shard_size=config.explain.shard_size,
        batch_size=config.explain.batch_size, heatmap_dtype=config.explain.heatmap_dtype,
        device=config.explain.device, threads=config.cluster.threads_per_worker,
    )
    start = time.perf_counter()
    if not markers.stage_done(STAGE):
        num_samples, sample_shape = check_job(job)  # fails here, before any work, on bad input or model
        update_manifest(run, dataset={"kind": source.kind, "path": source.path, "num_samples": num_samples,
                                      "sample_shape": list(sample_shape),
                                      "fingerprint": _file_fingerprint(source.index or source.path)},
                        model={"kind": model.kind, "factory": model.factory, "name": model.name,
                               "checkpoint": model.checkpoint, "fingerprint": _file_fingerprint(model.checkpoint)})
        with dask_client(config.cluster) as client:
            if not quiet:
                where = config.cluster.scheduler or f"LocalCluster, {config.cluster.workers} workers"
                print(f"explain: {num_samples} samples, {config.explain.method} on {where}", flush=True)
            counts = run_explain_stage(job, client, num_samples=num_samples, sample_shape=sample_shape,
                                       progress=not quiet)
        markers.mark_stage(STAGE, seconds=time.perf_counter() - start, **counts)
    from unhans.storage import open_run

    quarantined, examples = quarantine_summary(run)
    return {"run": str(run), "samples": int(open_run(run).manifest["dataset"]["num_samples"]),
            "quarantined": quarantined, "quarantine_examples": examples,
            "seconds": (markers.stage_info(STAGE) or {}).get("seconds")}
