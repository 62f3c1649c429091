"""The explain stage: every sample explained with LRP, shard by shard, on a Dask cluster.

The samples are cut into units of ``shard_size`` consecutive ids. A unit is one Dask task:
it explains its samples, writes its own Zarr shard and its own Parquet part, then commits
its marker. A rerun skips units with a marker; a retried unit (a worker died) overwrites
only its own shard and part, so no sample is lost or duplicated.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin

from .model_spec import ModelSpec

STAGE = "explain"
SAMPLES_TABLE = "samples"
TOP_K = 3


@dataclass(frozen=True)
class ExplainJob:
    """Everything a worker needs to explain any unit of a run (picklable, no tensors)."""

    run_dir: str
    images_path: str
    labels_path: str
    model: ModelSpec
    composite: str = "epsilon_plus_flat"
    target: str = "predicted"
    shard_size: int = 256
    batch_size: int = 128
    heatmap_dtype: str = "float16"
    device: str = "auto"
    threads: int = 1

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:12]


def unit_ranges(num_samples: int, shard_size: int) -> list[tuple[int, int, int]]:
    """(unit, start, stop) for shard-aligned units covering 0..num_samples."""
    return [(u, s, min(s + shard_size, num_samples)) for u, s in enumerate(range(0, num_samples, shard_size))]


class LoadedJob:
    """A job's model, explainer and inputs, loaded once per process (per Dask worker)."""

    def __init__(self, job: ExplainJob):
        from explainers import LRP

        from .devices import limit_threads, resolve_device

        limit_threads(job.threads)
        self.job = job
        self.device = resolve_device(job.device)
        self.model = job.model.build(self.device)
        self.explainer = LRP(self.model, composite=job.composite)
        self.images = np.load(job.images_path, mmap_mode="r")
        self.labels = np.load(job.labels_path, mmap_mode="r")


def _rows_for(ids, labels, logits, targets, relevance_sums, scales, status, errors):
    import pyarrow as pa

    top_values, top_classes = logits.topk(min(TOP_K, logits.shape[1]), dim=1) if logits is not None else (None, None)
    n = len(ids)
    explained = logits.gather(1, targets[:, None])[:, 0].numpy() if logits is not None else np.full(n, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        conservation = np.where(explained != 0, relevance_sums / explained, np.nan)
    return pa.table({
        "sample_id": pa.array(ids, pa.int64()),
        "source": pa.array([f"index:{i}" for i in ids], pa.string()),
        "label": pa.array(labels, pa.int64()),
        "prediction": pa.array(logits.argmax(1).numpy() if logits is not None else np.full(n, -1), pa.int64()),
        "top_classes": pa.array(top_classes.numpy().tolist() if top_classes is not None else [[]] * n, pa.list_(pa.int64())),
        "top_logits": pa.array(top_values.numpy().tolist() if top_values is not None else [[]] * n, pa.list_(pa.float32())),
        "target": pa.array(targets.numpy(), pa.int64()),
        "target_logit": pa.array(explained, pa.float32()),
        "relevance_sum": pa.array(relevance_sums, pa.float32()),
        "conservation": pa.array(conservation, pa.float32()),
        "scale": pa.array(scales, pa.float32()),
        "status": pa.array(status, pa.string()),
        "error": pa.array(errors, pa.string()),
    })


def explain_range(loaded: LoadedJob, start: int, stop: int):
    """Explain samples [start, stop): returns (heatmaps normalized for storage, table rows)."""
    import torch

    from storage import normalize_for_storage

    job = loaded.job
    x_all = torch.from_numpy(np.array(loaded.images[start:stop], dtype=np.float32))
    labels = np.asarray(loaded.labels[start:stop], dtype=np.int64)
    ids = np.arange(start, stop, dtype=np.int64)
    status = np.array(["ok"] * len(ids), dtype=object)
    errors = np.array([""] * len(ids), dtype=object)
    bad_input = ~torch.isfinite(x_all.reshape(len(ids), -1)).all(1).numpy()
    status[bad_input] = "quarantined"
    errors[bad_input] = "input contains NaN or Inf"
    heatmaps = np.zeros(x_all.shape, dtype=np.float32)
    logits_all = torch.zeros(len(ids), 0)
    logit_chunks, target_chunks = [], []
    for b in range(0, len(ids), job.batch_size):
        x = x_all[b:b + job.batch_size].to(loaded.device)
        with torch.no_grad():
            logits = loaded.model(x).float()
        bad_logits = ~torch.isfinite(logits).all(1).cpu().numpy()
        sl = slice(b, b + len(x))
        newly_bad = bad_logits & (status[sl] == "ok")
        status[sl][newly_bad] = "quarantined"
        errors[sl][newly_bad] = "model output contains NaN or Inf"
        if job.target == "predicted":
            target = logits.argmax(1)
        else:
            target = torch.from_numpy(labels[sl]).to(loaded.device)
        good = torch.from_numpy(status[sl] == "ok").to(loaded.device)
        if good.any():
            rel = loaded.explainer(x[good], target[good])
            heatmaps[sl][good.cpu().numpy()] = rel.detach().float().cpu().numpy()
        logit_chunks.append(torch.nan_to_num(logits.cpu()))
        target_chunks.append(target.cpu())
    logits_all = torch.cat(logit_chunks)
    targets = torch.cat(target_chunks)
    relevance_sums = heatmaps.reshape(len(ids), -1).sum(1)
    stored, scales = normalize_for_storage(heatmaps)
    rows = _rows_for(ids, labels, logits_all, targets, relevance_sums, scales, status.tolist(), errors.tolist())
    return stored.astype(job.heatmap_dtype), rows


def _worker_job(key: str) -> LoadedJob:
    from distributed import get_worker

    return get_worker().plugins[f"unhans-explain-{key}"].loaded


def explain_unit(key: str, unit: int, start: int, stop: int) -> dict:
    """A Dask task: explain one unit, write its shard and table part, then its marker."""
    from storage import Markers, open_heatmap_array, write_part

    loaded = _worker_job(key)
    run_dir = Path(loaded.job.run_dir)
    stored, rows = explain_range(loaded, start, stop)
    open_heatmap_array(run_dir, mode="r+")[start:stop] = stored
    write_part(run_dir, SAMPLES_TABLE, unit, rows)
    quarantined = int(sum(s != "ok" for s in rows.column("status").to_pylist()))
    Markers(run_dir).mark_unit(STAGE, unit, start=start, stop=stop, quarantined=quarantined)
    return {"unit": unit, "samples": stop - start, "quarantined": quarantined}


class ExplainerPlugin(WorkerPlugin):
    """Dask worker plugin: loads the job's model and explainer once per worker."""

    def __init__(self, job: ExplainJob):
        self.job = job
        self.loaded = None

    def setup(self, worker=None):
        from .cluster import ensure_project_importable

        ensure_project_importable()
        self.loaded = LoadedJob(self.job)

    def teardown(self, worker=None):
        self.loaded = None


def run_explain_stage(job: ExplainJob, client, *, num_samples: int, sample_shape: tuple[int, ...],
                      progress: bool = True) -> dict:
    """Explain all units without a marker on ``client``'s cluster; returns counts."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    from storage import Markers, create_heatmap_array

    run_dir = Path(job.run_dir)
    create_heatmap_array(run_dir, num_samples, sample_shape, job.shard_size, job.heatmap_dtype)
    markers = Markers(run_dir)
    done = markers.done_units(STAGE)
    todo = [u for u in unit_ranges(num_samples, job.shard_size) if u[0] not in done]
    key = job.key()
    if todo:
        client.register_plugin(ExplainerPlugin(job), name=f"unhans-explain-{key}")
    futures = [
        client.submit(explain_unit, key, unit, start, stop, key=f"explain-{key}-{unit}", retries=3, pure=False)
        for unit, start, stop in todo
    ]
    quarantined = 0
    with tqdm(total=num_samples, initial=num_samples - sum(s2 - s1 for _, s1, s2 in todo),
              desc="explain", unit="sample", disable=not progress, leave=False) as bar:
        for future in as_completed(futures):
            result = future.result()
            quarantined += result["quarantined"]
            bar.update(result["samples"])
    if todo:
        client.unregister_worker_plugin(f"unhans-explain-{key}")
    return {"units": len(unit_ranges(num_samples, job.shard_size)), "computed_units": len(todo),
            "quarantined_new": quarantined}
