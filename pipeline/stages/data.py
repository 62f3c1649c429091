"""The data stage: the samples of the audit, checked and identified before any heavy work.

Embedded digits: build the dataset with its defects, keep ground truth in its own table.
User input: list an image folder / Parquet list into the run's image index, open the source,
build the model and explain one sample (meanwhile the Dask cluster starts and its workers import
torch and the explainers, see ``AuditContext.start_cluster``), and check what must agree before hours of work: the
model's number of outputs against the number of classes, and a recorded trajectory's sample
and class counts against the input's. The manifest records the dataset's and the model's
identity (sizes, class names, fingerprints).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..image_index import build_image_index
from ..sources import SourceError
from .context import AuditContext

STAGE = "data"


class TrajectoryMismatchError(ValueError):
    """The recorded trajectory does not belong to this input (sample or class count)."""


def _fingerprint_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def file_fingerprint(path: str | Path | None) -> str | None:
    """sha256 (16 hex digits) of a file's bytes, or None when there is no such file."""
    if not path or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def input_identity(job, num_samples: int, sample_shape: tuple[int, ...]) -> dict:
    """The manifest's ``dataset`` record of a job's input (the image index's fingerprint, or the file's)."""
    from unhans.storage import RunLayout

    index = RunLayout(job.run_dir).image_index
    return {"kind": job.input.kind, "path": job.input.path, "num_samples": num_samples,
            "sample_shape": list(sample_shape),
            "fingerprint": file_fingerprint(index if index.is_file() else job.input.path)}


def model_identity(model, num_outputs: int) -> dict:
    """The manifest's ``model`` record of a user's model."""
    return {"kind": model.kind, "factory": model.factory, "name": model.name, "checkpoint": model.checkpoint,
            "num_outputs": num_outputs, "fingerprint": file_fingerprint(model.checkpoint)}


def run(ctx: AuditContext) -> None:
    if ctx.config.embedded:
        _embedded(ctx)
    else:
        _user_input(ctx)


def _embedded(ctx: AuditContext) -> None:
    """Build the embedded dataset with its defects; keep ground truth in its own table."""
    import pyarrow as pa

    from unhans.storage import update_manifest, write_table
    from unhans.storage.atomic import write_atomic, write_npz_atomic

    from ..digits import load_digits_dataset

    config, layout = ctx.config, ctx.layout
    dataset = load_digits_dataset(config.dataset)
    train = dataset.train
    layout.inputs.mkdir(parents=True, exist_ok=True)
    write_atomic(layout.embedded_images, lambda fh: np.save(fh, train.images))
    write_atomic(layout.embedded_labels, lambda fh: np.save(fh, train.labels))
    write_npz_atomic(layout.embedded_test, images=dataset.test.images, labels=dataset.test.labels)
    n = len(train.labels)
    write_table(layout.root, "ground_truth", pa.table({
        "sample_id": pa.array(np.arange(n), pa.int64()),
        "key": pa.array([str(i) for i in range(n)], pa.string()),
        "label": pa.array(train.labels, pa.int64()),
        "true_label": pa.array(train.true_labels, pa.int64()),
        "tagged": pa.array(train.tagged),
        "flipped": pa.array(train.flipped),
    }))
    update_manifest(layout.root, dataset={
        "name": config.dataset.name, "kind": "embedded", "num_samples": n,
        "sample_shape": list(train.images.shape[1:]), "num_classes": len(dataset.class_names),
        "class_names": dataset.class_names, "fingerprint": _fingerprint_arrays(train.images, train.labels),
    })
    ctx.markers.mark_stage(STAGE, num_samples=n, tagged=int(train.tagged.sum()), flipped=int(train.flipped.sum()))
    ctx.log(f"data: {n} training images, {int(train.tagged.sum())} tagged, {int(train.flipped.sum())} labels "
            "flipped (ground truth kept aside)")


def _user_input(ctx: AuditContext) -> None:
    """Index and check the user's input and model; record their identity in the manifest."""
    from unhans.storage import update_manifest

    from .explain import ExplainJob, check_job

    from .explain import STAGE as EXPLAIN, worker_imports

    spec, model = ctx.input_spec(), ctx.model_spec()
    store = ctx.trajectory_store()
    if spec.kind in ("imagefolder", "parquet"):  # a recorded trajectory numbers the samples in canonical order
        build_image_index(spec, ctx.layout.image_index, ctx.reuse, keep_ids=store is None,
                          trust_stat=not ctx.reuse_rehash)
    if not ctx.markers.stage_done(EXPLAIN):  # the cluster comes up while the model is checked here
        ctx.start_cluster(warm=worker_imports(ctx.config.explain, model))
    job = ExplainJob(run_dir=str(ctx.layout.root.resolve()), input=spec, model=model, explain=ctx.config.explain)
    num_samples, sample_shape, num_outputs = check_job(job)
    source = job.open_source()
    names = _class_names(spec.class_names, source.class_names, num_outputs, spec)
    if store is not None:
        check_trajectory(store, num_samples, len(names))
    update_manifest(ctx.layout.root, dataset={
        **input_identity(job, num_samples, sample_shape), "name": Path(spec.path).name,
        "num_classes": len(names), "class_names": names,
    }, model=model_identity(model, num_outputs), trajectory=None if store is None else str(store))
    ctx.markers.mark_stage(STAGE, num_samples=num_samples)
    ctx.log(f"data: {num_samples} samples of {len(names)} classes from {spec.path} ({spec.kind}); model "
            f"{model.name or model.factory or model.checkpoint} with {num_outputs} outputs"
            + (f"; trajectory {store}" if store else "; no trajectory: mislabel evidence from the model alone"))


def _class_names(configured: list[str] | None, from_folders: list[str] | None, num_outputs: int, spec) -> list[str]:
    """Class names: input.class_names, else the folder names, else indices; must match the model's outputs."""
    if configured is not None:
        names, where = list(configured), "input.class_names"
    elif from_folders is not None:
        names, where = list(from_folders), f"the class folders of {spec.path}"
    else:
        return [str(k) for k in range(num_outputs)]
    if len(names) != num_outputs:
        raise SourceError(f"model: it has {num_outputs} outputs but {where} name {len(names)} classes; "
                          "the model's output size must equal the number of classes")
    return names


def check_trajectory(store: Path, num_samples: int, num_classes: int) -> None:
    """Raise a one-line error unless the trajectory under ``store`` has N samples and K classes."""
    from unhans.spray.dynamics.trajectory_store import read_header, stored_epochs

    paths = stored_epochs(store)
    if not paths:
        raise FileNotFoundError(f"dynamics.trajectory: no recorded epochs under {Path(store) / 'dynamics'} "
                                "(the directory given to DynamicsRecorder(store=...))")
    n, k = read_header(paths[0])
    if (n, k) != (num_samples, num_classes):
        raise TrajectoryMismatchError(
            f"dynamics.trajectory: {store} was recorded for {n} samples and {k} classes, but the input has "
            f"{num_samples} samples and {num_classes} classes")
