"""``unhans audit``: the stages wired together, each resumable through its marker.

data → train (recording dynamics) → explain (Dask) → dynamics → spray → flags → report.
A stage whose marker exists is skipped on a rerun; the explain stage also resumes unit by
unit. Stages talk only through the run directory (``storage``).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import AuditConfig, to_dict
from .model_spec import ModelSpec

INPUTS = "inputs"
MODEL_FILE = "model.pt"
MODEL_FACTORY = "unhans.pipeline.small_cnn:small_cnn"


@dataclass
class AuditPaths:
    run: Path

    @property
    def images(self) -> Path:
        return self.run / INPUTS / "images.npy"

    @property
    def labels(self) -> Path:
        return self.run / INPUTS / "labels.npy"

    @property
    def model(self) -> Path:
        return self.run / MODEL_FILE


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, flush=True)


def _fingerprint(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def stage_data(config: AuditConfig, paths: AuditPaths, markers, quiet: bool) -> None:
    """Build the embedded dataset with its defects; keep ground truth in its own table."""
    import pyarrow as pa

    from unhans.storage import update_manifest, write_table

    from .digits import load_digits_dataset

    dataset = load_digits_dataset(config.dataset)
    train = dataset.train
    (paths.run / INPUTS).mkdir(parents=True, exist_ok=True)
    np.save(paths.images, train.images)
    np.save(paths.labels, train.labels)
    np.savez(paths.run / INPUTS / "test.npz", images=dataset.test.images, labels=dataset.test.labels)
    n = len(train.labels)
    write_table(paths.run, "ground_truth", pa.table({
        "sample_id": pa.array(np.arange(n), pa.int64()),
        "label": pa.array(train.labels, pa.int64()),
        "true_label": pa.array(train.true_labels, pa.int64()),
        "tagged": pa.array(train.tagged),
        "flipped": pa.array(train.flipped),
    }))
    update_manifest(paths.run, dataset={
        "name": config.dataset.name, "num_samples": n, "sample_shape": list(train.images.shape[1:]),
        "num_classes": len(dataset.class_names), "class_names": dataset.class_names,
        "fingerprint": _fingerprint(train.images, train.labels),
    })
    markers.mark_stage("data", num_samples=n, tagged=int(train.tagged.sum()), flipped=int(train.flipped.sum()))
    _log(f"data: {n} training images, {int(train.tagged.sum())} tagged, {int(train.flipped.sum())} labels flipped "
         "(ground truth kept aside)", quiet)


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def stage_train(config: AuditConfig, paths: AuditPaths, markers, quiet: bool) -> None:
    """Train the small CNN on the noisy labels, recording dynamics every epoch."""
    import shutil

    import torch

    from unhans.spray.dynamics import DynamicsRecorder
    from unhans.storage import update_manifest

    from .devices import available_cores, limit_threads, resolve_device
    from .small_cnn import small_cnn
    from .training import save_checkpoint, train_classifier

    info = _manifest(paths.run)["dataset"]
    limit_threads(available_cores())
    device = resolve_device(config.training.device)
    images = np.load(paths.images)
    labels = np.load(paths.labels)
    test = np.load(paths.run / INPUTS / "test.npz")
    # A training run killed midway restarts from scratch: its partial trajectory goes too.
    shutil.rmtree(paths.run / "dynamics", ignore_errors=True)
    recorder = DynamicsRecorder(num_samples=len(labels), num_classes=info["num_classes"], store=paths.run)
    torch.manual_seed(config.training.seed)
    model = small_cnn(in_channels=images.shape[1], num_classes=info["num_classes"], image_size=images.shape[-1])
    result = train_classifier(
        model, images, labels, config.training, device=device, recorder=recorder,
        test_images=test["images"], test_labels=test["labels"], progress=not quiet,
    )
    recorder.flush()  # the trajectory is on disk before the stage counts as done
    save_checkpoint(result.model, paths.model)
    update_manifest(paths.run, model={
        "factory": MODEL_FACTORY, "kwargs": _model_kwargs(images, info), "checkpoint": MODEL_FILE,
        "fingerprint": hashlib.sha256(paths.model.read_bytes()).hexdigest()[:16],
    })
    markers.mark_stage("train", seconds=result.seconds, train_accuracy=result.train_accuracy,
                       test_accuracy=result.test_accuracy, device=device)
    _log(f"train: {config.training.epochs} epochs in {result.seconds:.1f}s on {device}, accuracy "
         f"{result.train_accuracy:.3f} on the noisy training labels, {result.test_accuracy:.3f} on clean test", quiet)


def _model_kwargs(images: np.ndarray, info: dict) -> dict:
    return {"in_channels": int(images.shape[1]), "num_classes": int(info["num_classes"]),
            "image_size": int(images.shape[-1])}


def stage_explain(config: AuditConfig, paths: AuditPaths, markers, quiet: bool) -> None:
    """LRP for every training sample on the Dask cluster, unit by unit."""
    from .cluster import dask_client
    from .explain_stage import STAGE, ExplainJob, run_explain_stage
    from .sources import SourceSpec

    manifest = _manifest(paths.run)
    info, model = manifest["dataset"], manifest["model"]
    job = ExplainJob(
        run_dir=str(paths.run.resolve()),
        source=SourceSpec(kind="npy", path=str(paths.images.resolve()), labels_path=str(paths.labels.resolve())),
        model=ModelSpec(kind="factory", factory=model["factory"], checkpoint=str(paths.model.resolve()),
                        kwargs=model["kwargs"]),
        method=config.explain.method, composite=config.explain.composite, target=config.explain.target,
        shard_size=config.explain.shard_size, batch_size=config.explain.batch_size,
        heatmap_dtype=config.explain.heatmap_dtype, device=config.explain.device,
        threads=config.cluster.threads_per_worker,
    )
    start = time.perf_counter()
    with dask_client(config.cluster) as client:
        where = config.cluster.scheduler or f"LocalCluster, {config.cluster.workers} workers"
        _log(f"explain: LRP {config.explain.composite} on {where}", quiet)
        counts = run_explain_stage(job, client, num_samples=info["num_samples"],
                                   sample_shape=tuple(info["sample_shape"]), progress=not quiet)
    seconds = time.perf_counter() - start
    markers.mark_stage(STAGE, seconds=seconds, **counts)
    _log(f"explain: {info['num_samples']} heatmaps in {seconds:.1f}s "
         f"({counts['computed_units']}/{counts['units']} units computed now)", quiet)


def stage_dynamics(config: AuditConfig, paths: AuditPaths, markers, quiet: bool) -> None:
    from unhans.spray.dynamics import load_trajectory, statistics_from_trajectory
    from unhans.storage import write_table

    table = statistics_from_trajectory(load_trajectory(paths.run))
    write_table(paths.run, "dynamics", table)
    suspects = int(np.asarray(table.column("mislabel_suspect")).sum())
    markers.mark_stage("dynamics", mislabel_suspects=suspects)
    _log(f"dynamics: {suspects} mislabel suspects from {table.num_rows} trajectories", quiet)


def stage_spray(config: AuditConfig, paths: AuditPaths, markers, quiet: bool) -> None:
    """SpRAy per explained class and each class's Clever-Hans candidate (see pipeline.spray_stage)."""
    from .spray_stage import run_spray_stage

    info = _manifest(paths.run)["model"]
    summary = run_spray_stage(paths.run, paths.images, config.spray, model_spec=ModelSpec(
        kind="factory", factory=info["factory"], checkpoint=str(paths.model), kwargs=info["kwargs"]), quiet=quiet)
    markers.mark_stage("spray", classes=summary["classes"])
    _log(f"spray: {summary['classes']} classes, {summary['clusters']} clusters", quiet)


def stage_flags(config: AuditConfig, paths: AuditPaths, markers, quiet: bool) -> None:
    """Per-sample flags and scores, the class ranking, and summary.json."""
    import pyarrow as pa

    from unhans.spray import ClusterEvidence, flag_classes, rank_classes
    from unhans.storage import read_table, write_table
    from unhans.storage.atomic import write_json_atomic

    from unhans.spray.clever_hans import FLAG_SCORE

    from .evaluation import evaluate

    spray_info = json.loads((paths.run / "unhans.spray.json").read_text())
    evidence = [ClusterEvidence(**{k: v for k, v in c["candidate"].items() if k not in ("confirmation", "window")},
                                window=tuple(c["candidate"]["window"]))
                for c in spray_info["classes"] if c["candidate"] is not None]
    confirmations = {c["class_id"]: c["candidate"].get("confirmation") for c in spray_info["classes"]
                     if c["candidate"] is not None}
    flagged = flag_classes(evidence)
    ranking = rank_classes(evidence, [c["class_id"] for c in spray_info["classes"]])
    samples = read_table(paths.run, "samples").sort_by("sample_id")
    status = samples.column("status").to_numpy(zero_copy_only=False)
    spray_table = read_table(paths.run, "spray").sort_by("sample_id")
    artifact_score = spray_table.column("artifact_score").to_numpy().astype(np.float64)
    dynamics = read_table(paths.run, "dynamics").sort_by("sample_id")
    mislabel_score = dynamics.column("mislabel_score").to_numpy(zero_copy_only=False).astype(np.float64)
    mislabel_suspect = dynamics.column("mislabel_suspect").to_numpy(zero_copy_only=False).astype(bool)
    n = len(status)
    artifact_suspect = np.zeros(n, bool)
    for e in flagged:
        artifact_suspect[e.carriers] = True
        artifact_suspect[e.other_members] = True
    write_table(paths.run, "flags", pa.table({
        "sample_id": pa.array(np.arange(n), pa.int64()),
        "artifact_score": pa.array(artifact_score, pa.float32()),
        "artifact_suspect": pa.array(artifact_suspect),
        "mislabel_score": pa.array(mislabel_score, pa.float32()),
        "mislabel_suspect": pa.array(mislabel_suspect),
    }))
    manifest = _manifest(paths.run)
    train_info = markers.stage_info("train") or {}
    summary = {
        "schema_version": 1,
        "run": str(paths.run),
        "config": to_dict(config),
        "versions": manifest.get("versions", {}),
        "dataset": manifest.get("dataset", {}),
        "model": {**manifest.get("model", {}), "train_accuracy": train_info.get("train_accuracy"),
                  "test_accuracy": train_info.get("test_accuracy")},
        "samples": {"total": n, "explained": int((status == "ok").sum()),
                    "quarantined": int((status != "ok").sum())},
        "clever_hans": {
            "class_ranking": [{"class_id": k, "score": s} for k, s in ranking],
            "flagged_clusters": [{**e.to_dict(), "confirmation": confirmations.get(e.class_id)} for e in flagged],
            "confirmations": [v for v in confirmations.values() if v],
            "flag_threshold": FLAG_SCORE,
            "artifact_suspects": int(artifact_suspect.sum()),
        },
        "mislabel": {"suspects": int(mislabel_suspect.sum())},
        "stages": _stage_seconds(markers, n),
    }
    if config.dataset.name == "digits":  # the embedded dataset carries ground truth
        truth = read_table(paths.run, "ground_truth").sort_by("sample_id")
        art = config.dataset.artifact
        summary["evaluation"] = evaluate(
            class_ranking=[k for k, _ in ranking],
            artifact_class=art.class_ if art.fraction > 0 else None,
            artifact_suspect=artifact_suspect, tagged=truth.column("tagged").to_numpy(zero_copy_only=False),
            mislabel_score=mislabel_score, flipped=truth.column("flipped").to_numpy(zero_copy_only=False),
        )
    write_json_atomic(paths.run / "summary.json", summary)
    markers.mark_stage("flags", artifact_suspects=int(artifact_suspect.sum()), mislabel_suspects=int(mislabel_suspect.sum()))
    _log(f"flags: {len(flagged)} Clever-Hans cluster(s), {int(artifact_suspect.sum())} artifact suspects, "
         f"{int(mislabel_suspect.sum())} mislabel suspects", quiet)


def _stage_seconds(markers, num_samples: int) -> dict:
    """Wall seconds of the stages before flags (as their markers recorded them), explain samples/s."""
    out = {}
    for name in ("data", "train", "explain", "dynamics", "spray"):
        seconds = (markers.stage_info(name) or {}).get("seconds")
        out[name] = {"seconds": None if seconds is None else round(float(seconds), 3)}
    explain = out["explain"]["seconds"]
    if explain:
        out["explain"]["samples_per_second"] = round(num_samples / explain, 1)
    return out


def stage_report(config: AuditConfig, paths: AuditPaths, markers, quiet: bool) -> None:
    from .report import write_report

    write_report(paths.run)
    markers.mark_stage("report")


STAGES = [
    ("data", stage_data),
    ("train", stage_train),
    ("explain", stage_explain),
    ("dynamics", stage_dynamics),
    ("spray", stage_spray),
    ("flags", stage_flags),
    ("report", stage_report),
]


def run_audit(config: AuditConfig, out: str | Path, *, force: bool = False, quiet: bool = False) -> dict:
    """Run every stage not yet finished in ``out``; returns summary.json as a dict.

    ``force`` starts the run directory over (its old outputs are deleted first).
    """
    import shutil

    from unhans.storage import init_run

    run = Path(out)
    if force and run.exists():
        if not (run / "manifest.json").exists() and any(run.iterdir()):
            raise FileExistsError(f"{run} is not an unhans run directory; refusing to delete it with --force")
        shutil.rmtree(run)
    markers = init_run(run, to_dict(config))
    paths = AuditPaths(run)
    total = time.perf_counter()
    for name, stage in STAGES:
        if markers.stage_done(name):
            _log(f"{name}: done already, skipped", quiet)
            continue
        start = time.perf_counter()
        stage(config, paths, markers, quiet)
        info = markers.stage_info(name) or {}
        if "seconds" not in info:  # every stage's wall time, for summary.json and nightly comparisons
            markers.mark_stage(name, **{k: v for k, v in info.items() if k not in ("stage", "finished")},
                               seconds=time.perf_counter() - start)
    _log(f"audit finished in {time.perf_counter() - total:.1f}s", quiet)
    return json.loads((run / "summary.json").read_text())
