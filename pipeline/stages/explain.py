"""The explain stage: every sample explained, shard by shard, on a Dask ``distributed`` cluster.

The samples are cut into units of ``shard_size`` consecutive ids. A unit is one Dask task:
it reads its samples from the source, explains them, writes its own Zarr shard and its own
Parquet part, then commits its marker. A rerun skips units with a marker; a retried unit
(its worker died) overwrites only its own shard and part, so no sample is lost or
duplicated. Unreadable samples are quarantined with a reason instead of failing the unit.

Besides the heatmaps and the ``samples`` table, each unit writes its part of the ``outputs``
table: every sample's full logits, its latent profile (``explain.latent_layer``, unless ``none``)
and, with ``record_features``, its penultimate features (:mod:`..activation_probe`). The logits
come from the explanation's own forward pass, and so does the latent profile when the explainer
can hand it over (``LRP.explain_observing``); otherwise the profile and the features come from one
extra no-grad forward per batch (about a third of an LRP pass). Features are recorded only when
the audit needs them (mislabel evidence without a recorded trajectory).
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin

from unhans.storage.layout import RunLayout

from ..config import ExplainConfig, InputConfig, ModelConfig
from ..model_loading import ModelLoadError, build_model
from ..sources import SourceError, open_source

STAGE = "explain"
SAMPLES_TABLE = "samples"
OUTPUTS_TABLE = "outputs"
TOP_K = 3


@dataclass(frozen=True)
class ExplainJob:
    """Everything a worker needs to explain any unit of a run (picklable, no tensors).

    ``input`` and ``model`` are the config's own sections with absolute paths.
    """

    run_dir: str
    input: InputConfig
    model: ModelConfig
    explain: ExplainConfig
    threads: int = 1
    record_features: bool = False
    reuse: str | None = None   # an earlier run whose matching explanations are copied (see .explain_reuse)

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:12]

    def open_source(self):
        return open_source(self.input, RunLayout(self.run_dir).image_index)


def worker_imports(explain: ExplainConfig, model: ModelConfig) -> tuple[str, ...]:
    """What a worker imports before it explains anything: warmed while the cluster starts
    (:meth:`~unhans.pipeline.stages.context.AuditContext.start_cluster`), so that the stage's time is its own
    work. torch's autograd imports sympy (~0.5 s) at the first ``grad`` with ``grad_outputs``, which LRP's rules call."""
    from unhans.explainers.registry import EXPLAINERS

    modules = ["torch", "torch.fx.experimental.symbolic_shapes", "pyarrow.parquet", "pyarrow.dataset", "zarr",
               "PIL.Image", f"unhans.explainers.{EXPLAINERS.get(explain.method, ('registry',))[0]}", __name__,
               f"{__package__}.explain_reuse"]
    if model.kind == "factory" and model.factory and ":" in model.factory:
        modules.append(model.factory.partition(":")[0])
    elif model.kind == "torchvision":
        modules.append("torchvision")
    return tuple(modules)


def unit_ranges(num_samples: int, shard_size: int) -> list[tuple[int, int, int]]:
    """(unit, start, stop) for shard-aligned units covering 0..num_samples."""
    return [(u, s, min(s + shard_size, num_samples)) for u, s in enumerate(range(0, num_samples, shard_size))]


def build_explainer(model, explain: ExplainConfig):
    """The configured explainer (:mod:`unhans.explainers.registry`); LRP gets the composite; with
    ``tsr`` it is wrapped in :class:`unhans.explainers.TemporalSaliencyRescaling` (time series)."""
    from unhans.explainers.registry import make_explainer

    options = {"composite": explain.composite, "concept_layer": explain.concept_layer} if explain.method == "lrp" else {}
    explainer = make_explainer(model, explain.method, **options)
    if explain.tsr:
        from unhans.explainers import TemporalSaliencyRescaling

        return TemporalSaliencyRescaling(explainer, alpha=explain.tsr_alpha, max_batch=explain.batch_size)
    return explainer


class LoadedJob:
    """A job's source, model and explainer, opened once per process (per Dask worker)."""

    def __init__(self, job: ExplainJob):
        from ..devices import limit_threads, resolve_device

        limit_threads(job.threads)
        self.job = job
        self.device = resolve_device(job.explain.device)
        self.source = job.open_source()
        self.model = build_model(job.model, self.device)
        self.explainer = build_explainer(self.model, job.explain)
        from ..activation_probe import ActivationProbe, latent_layer_path

        self.probe = ActivationProbe(self.model, features=job.record_features,
                                     latent_layer=latent_layer_path(self.model, job.explain.latent_layer))
        # no second forward pass when the explainer can hand over the latent layer's outputs from its own
        self.observes = (self.probe.latent_layer is not None and self.probe.feature_layer is None
                         and not job.explain.concepts and hasattr(self.explainer, "explain_observing"))
        self.earlier = None
        if job.reuse:
            from .explain_reuse import EarlierRun

            self.earlier = EarlierRun(job.reuse, job.run_dir, keeps_ids=self.source.keeps_ids_of(job.reuse))
        self._num_classes: int | None = None
        self._num_concepts: int | None = None
        self._heatmaps = None

    def heatmap_array(self):
        """The run's heatmap array, opened for writing once per process."""
        if self._heatmaps is None:
            from unhans.storage import open_heatmap_array

            self._heatmaps = open_heatmap_array(Path(self.job.run_dir), mode="r+")
        return self._heatmaps

    def num_concepts(self, x) -> int:
        """Channels of the concept layer, from one explanation of one sample the first time."""
        if self._num_concepts is None:
            self._num_concepts = int(self.explainer.explain_with_concepts(x[:1], "predicted")[1].shape[1])
        return self._num_concepts

    def num_classes(self, x) -> int:
        """The model's number of outputs, from one forward pass of one sample the first time."""
        if self._num_classes is None:
            import torch

            with torch.no_grad():
                self._num_classes = int(self.model(x[:1]).shape[1])
        return self._num_classes


def _rows(ids, batch, logits, targets, relevance_sums, scales, status, errors):
    """The unit's part of the ``samples`` table."""
    import pyarrow as pa

    top_values, top_classes = logits.topk(min(TOP_K, logits.shape[1]), dim=1)
    explained = logits.gather(1, targets[:, None])[:, 0].numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        conservation = np.where(explained != 0, relevance_sums / explained, np.nan)
    return pa.table({
        "sample_id": pa.array(ids, pa.int64()),
        "key": pa.array(batch.keys, pa.string()),
        "source": pa.array(batch.sources, pa.string()),
        "label": pa.array(batch.labels, pa.int64()),
        "prediction": pa.array(logits.argmax(1).numpy(), pa.int64()),
        "top_classes": pa.array(top_classes.numpy().tolist(), pa.list_(pa.int64())),
        "top_logits": pa.array(top_values.numpy().tolist(), pa.list_(pa.float32())),
        "target": pa.array(targets.numpy(), pa.int64()),
        "target_logit": pa.array(explained, pa.float32()),
        "relevance_sum": pa.array(relevance_sums, pa.float32()),
        "conservation": pa.array(conservation, pa.float32()),
        "scale": pa.array(scales, pa.float32()),
        "status": pa.array(status, pa.string()),
        "error": pa.array(errors, pa.string()),
        "content_hash": pa.array(batch.hashes, pa.string()),
    })


def _quarantine(status: list[str], errors: list[str], index: int, reason: str) -> None:
    if status[index] == "ok":
        status[index], errors[index] = "quarantined", reason


def _outputs(ids, logits, features, concepts=None, latent=None):
    """The unit's part of the ``outputs`` table: full logits, (optional) penultimate features,
    (optional) concept relevance (per channel of ``explain.concept_layer``, 0 for quarantined rows)
    and (optional) the latent profile (:mod:`..activation_probe`, 0 for quarantined rows)."""
    import pyarrow as pa

    def matrix(values):
        return pa.FixedSizeListArray.from_arrays(pa.array(values.numpy().ravel(), pa.float32()), values.shape[1])

    columns = {"sample_id": pa.array(ids, pa.int64()), "logits": matrix(logits)}
    if features is not None:
        columns["features"] = matrix(features)
    if concepts is not None:
        columns["concepts"] = matrix(concepts)
    if latent is not None:
        columns["latent"] = matrix(latent)
    return pa.table(columns)


def explain_range(loaded: LoadedJob, start: int, stop: int):
    """Samples [start, stop): (heatmaps normalized for storage, samples rows, outputs rows, number reused = 0).

    A re-audit takes whole spans of units instead (:func:`explain_span`, :mod:`.explain_reuse`)."""
    ids = np.arange(start, stop, dtype=np.int64)
    return (*_explain_fresh(loaded, loaded.source.load(start, stop), ids), 0)


def _concatenated(batches: list):
    """One :class:`~unhans.pipeline.sources.Batch` of several, in order."""
    from ..sources import Batch

    if len(batches) == 1:
        return batches[0]
    return Batch(np.concatenate([b.images for b in batches]), np.concatenate([b.labels for b in batches]),
                 [k for b in batches for k in b.keys], [x for b in batches for x in b.sources],
                 [x for b in batches for x in b.status], [x for b in batches for x in b.errors],
                 [x for b in batches for x in b.hashes])


def _explain_fresh(loaded: LoadedJob, batch, ids: np.ndarray):
    """Explain the samples ``ids`` read into ``batch``: (heatmaps normalized for storage, samples rows, outputs rows)."""
    import torch

    from unhans.storage import normalize_for_storage

    from ..activation_probe import latent_profile

    job = loaded.job.explain
    n = len(ids)
    status, errors = list(batch.status), list(batch.errors)
    x_all = torch.from_numpy(batch.images)
    heatmaps = np.zeros(batch.images.shape, dtype=np.float32)
    logit_chunks, target_chunks, feature_chunks, concept_chunks, latent_chunks = [], [], [], [], []
    for b in range(0, n, job.batch_size):
        sl = slice(b, min(b + job.batch_size, n))
        x = x_all[sl].to(loaded.device)
        num_classes = loaded.num_classes(x)
        if job.target == "label":
            for j in range(sl.start, sl.stop):
                label = int(batch.labels[j])
                if not 0 <= label < num_classes:
                    _quarantine(status, errors, j, f"label {label} is outside 0..{num_classes - 1}")
        good = np.array([s == "ok" for s in status[sl]])
        logits = torch.zeros((len(good), num_classes), dtype=torch.float32)
        target = torch.zeros(len(good), dtype=torch.long)
        concepts = torch.zeros((len(good), loaded.num_concepts(x)), dtype=torch.float32) if job.concepts else None
        latent = None
        if good.any():  # one forward + backward gives logits, predicted class and relevance
            mask = torch.from_numpy(good).to(loaded.device)
            wanted = "predicted"
            if job.target == "label":
                wanted = torch.from_numpy(batch.labels[sl][good].astype(np.int64)).to(loaded.device)
            if job.concepts:
                explained, channel_relevance = loaded.explainer.explain_with_concepts(x[mask], wanted)
                concepts[good] = torch.nan_to_num(channel_relevance.float().cpu())
            elif loaded.observes:  # the latent profile from the explanation's own forward pass
                explained, seen = loaded.explainer.explain_observing(x[mask], loaded.probe.latent_path, wanted)
                observed = latent_profile(seen).cpu()
                latent = torch.zeros((len(good), observed.shape[1]), dtype=torch.float32)
                latent[good] = observed
            else:
                explained = loaded.explainer.explain(x[mask], wanted)
            logits[good] = explained.logits.float().cpu()
            target[good] = explained.target.cpu()
            relevance = explained.relevance.detach().float().cpu().numpy()
            bad = ~np.isfinite(relevance.reshape(len(relevance), -1)).all(1)
            bad_logits = ~torch.isfinite(logits[good]).all(1).numpy()
            for j, bad_relevance, bad_output in zip(np.flatnonzero(good) + sl.start, bad, bad_logits):
                if bad_output:
                    _quarantine(status, errors, j, "model output contains NaN or Inf")
                elif bad_relevance:
                    _quarantine(status, errors, j, "explanation contains NaN or Inf")
            heatmaps[sl][good] = np.where(np.isfinite(relevance), relevance, 0.0)
        if not good.all():  # samples already quarantined (unreadable, bad label, ...): logits only
            with torch.no_grad():
                others = loaded.model(x[torch.from_numpy(~good).to(loaded.device)]).float().cpu()
            logits[~good] = others
            if job.target == "predicted":
                target[~good] = others.argmax(1)
            else:
                target[~good] = torch.from_numpy(np.clip(batch.labels[sl][~good], 0, num_classes - 1).astype(np.int64))
        logit_chunks.append(torch.nan_to_num(logits))
        target_chunks.append(target)
        if latent is None and loaded.probe.active:  # not observed (or no sample to explain): one no-grad forward
            features, latent = loaded.probe(x)
            feature_chunks.append(features)
        if latent is not None:
            latent_chunks.append(latent)
        if concepts is not None:
            concept_chunks.append(concepts)
    quarantined = np.array([s != "ok" for s in status])
    heatmaps[quarantined] = 0.0
    logits_all, targets = torch.cat(logit_chunks), torch.cat(target_chunks)
    relevance_sums = heatmaps.reshape(n, -1).sum(1)
    stored, scales = normalize_for_storage(heatmaps)
    rows = _rows(ids, batch, logits_all, targets, relevance_sums, scales, status, errors)
    features = None
    if feature_chunks and feature_chunks[0] is not None:
        features = torch.nan_to_num(torch.cat(feature_chunks))
    concepts_all = torch.cat(concept_chunks) if concept_chunks else None
    if concepts_all is not None:
        concepts_all[torch.from_numpy(quarantined)] = 0.0
    latent_all = None
    if latent_chunks and latent_chunks[0] is not None:
        latent_all = torch.nan_to_num(torch.cat(latent_chunks))
        latent_all[torch.from_numpy(quarantined)] = 0.0
    return stored.astype(job.heatmap_dtype), rows, _outputs(ids, logits_all, features, concepts_all, latent_all)


def explain_unit(key: str, unit: int, start: int, stop: int) -> dict:
    """A Dask task: explain one unit, write its shard and table part, then its marker."""
    from distributed import get_worker

    from .explain_reuse import UnitOutput

    loaded = get_worker().plugins[f"unhans-explain-{key}"].loaded
    stored, rows, outputs, reused = explain_range(loaded, start, stop)
    return write_units(loaded, [UnitOutput(unit, start, stop, stored, rows, outputs, reused)])[0]


def explain_span(key: str, units: list[tuple[int, int, int]]) -> list[dict]:
    """A Dask task of a re-audit: consecutive units (see :mod:`.explain_reuse`), written as :func:`explain_unit` does."""
    from distributed import get_worker

    from .explain_reuse import explain_span as outputs_of

    loaded = get_worker().plugins[f"unhans-explain-{key}"].loaded
    return write_units(loaded, outputs_of(loaded, units))


def write_units(loaded: LoadedJob, results: list) -> list[dict]:
    """Write units' shards and table parts (or link an earlier run's), make them durable, then mark the units.

    A unit owns its shard and its parts, so a unit redone after a crash replaces exactly its own files."""
    from unhans.storage import Markers
    from unhans.storage.atomic import DurableFiles
    from unhans.storage.heatmaps import shard_file
    from unhans.storage.tables import part_path

    run_dir = Path(loaded.job.run_dir)
    array = loaded.heatmap_array()
    with DurableFiles() as files:
        for run in _contiguous([r for r in results if r.files is None]):  # one Zarr write per run of units
            array[run[0].start:run[-1].stop] = (run[0].stored if len(run) == 1
                                                 else np.concatenate([r.stored for r in run]))
        for r in results:
            shard = shard_file(run_dir, array, r.unit)
            if r.files is not None:
                old_shard, old_samples, old_outputs = r.files
                if old_shard.is_file():
                    files.link(old_shard, shard)
                else:  # all of OLD's maps in the unit are zero: Zarr stored no file, nor may NEW
                    shard.unlink(missing_ok=True)
                files.link(old_outputs, part_path(run_dir, OUTPUTS_TABLE, r.unit))
                files.link(old_samples, part_path(run_dir, SAMPLES_TABLE, r.unit))
                continue
            if shard.is_file():
                files.sync(shard)
            files.write_parquet(part_path(run_dir, OUTPUTS_TABLE, r.unit), r.outputs)
            files.write_parquet(part_path(run_dir, SAMPLES_TABLE, r.unit), r.rows)
    infos = {r.unit: {"start": r.start, "stop": r.stop, "quarantined": r.quarantined, "reused": r.reused}
             for r in results}
    Markers(run_dir).mark_units(STAGE, infos)
    return [{"unit": unit, "samples": info["stop"] - info["start"], **info} for unit, info in infos.items()]


def _contiguous(results: list) -> list[list]:
    """``results`` (in unit order) grouped into runs of adjacent units."""
    runs: list[list] = []
    for r in results:
        if runs and runs[-1][-1].stop == r.start:
            runs[-1].append(r)
        else:
            runs.append([r])
    return runs


class ExplainerPlugin(WorkerPlugin):
    """Dask worker plugin: opens the job's source and builds its model and explainer once per worker."""

    def __init__(self, job: ExplainJob):
        self.job = job
        self.loaded = None

    def setup(self, worker=None):
        self.loaded = LoadedJob(self.job)

    def teardown(self, worker=None):
        self.loaded = None


def check_job(job: ExplainJob) -> tuple[int, tuple[int, ...]]:
    """Fail before any work: open the source, build the model, explain one sample.

    Returns (number of samples, sample shape, number of model outputs). Raises SourceError, ModelLoadError,
    UnsupportedModelError or ValueError with a message naming the key or file.
    """
    import torch

    source = job.open_source()
    model = build_model(job.model, "cpu")
    probe = None
    for start in range(0, min(len(source), 256), 16):
        batch = source.load(start, min(start + 16, len(source)))
        ok = [i for i, s in enumerate(batch.status) if s == "ok"]
        if ok:
            probe = torch.from_numpy(batch.images[ok[:1]])
            break
    if probe is None:
        reasons = "; ".join(sorted(set(e for e in batch.errors if e))[:3])
        raise SourceError(f"input: none of the first 256 samples is readable ({reasons})")
    try:
        with torch.no_grad():
            out = model(probe)
    except RuntimeError as exc:  # typically a shape mismatch between the input and the first layer
        raise ModelLoadError(f"model: forward on one input of shape {tuple(probe.shape)} failed: "
                             f"{str(exc).splitlines()[0]}") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelLoadError(f"model: output must be (batch, classes) logits, got {shape} for input "
                             f"{tuple(probe.shape)}")
    explainer = build_explainer(model, job.explain)
    explainer(probe, out.argmax(1))
    return len(source), tuple(source.sample_shape), int(out.shape[1])


def _malloc_trim_threshold() -> str | None:
    import os

    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def warn_about_malloc_trim(client) -> None:
    """Say so when workers run with ``MALLOC_TRIM_THRESHOLD_`` set (Dask's nanny default; see pipeline.cluster)."""
    try:
        values = {value for value in client.run(_malloc_trim_threshold).values() if value}
    except Exception:  # noqa: BLE001 - a worker that cannot answer must not stop the stage over a warning
        return
    if values:
        print(f"unhans: the Dask workers run with MALLOC_TRIM_THRESHOLD_={'/'.join(sorted(values))}, which makes "
              "torch much slower (every tensor a fresh mmap); start them without it, see README "
              "'Running on a cluster'.", file=sys.stderr)


def run_explain_stage(job: ExplainJob, client, *, num_samples: int, sample_shape: tuple[int, ...],
                      progress: bool = True) -> dict:
    """Explain all units without a marker on ``client``'s cluster; returns counts (``quarantined``: samples left out)."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    from unhans.storage import Markers, create_heatmap_array

    run_dir = Path(job.run_dir)
    create_heatmap_array(run_dir, num_samples, sample_shape, job.explain.shard_size, job.explain.heatmap_dtype)
    markers = Markers(run_dir)
    done = markers.done_units(STAGE)
    units = unit_ranges(num_samples, job.explain.shard_size)
    todo = [u for u in units if u[0] not in done]
    key = job.key()
    if todo:
        warn_about_malloc_trim(client)
        client.register_plugin(ExplainerPlugin(job), name=f"unhans-explain-{key}")
    if job.reuse:  # mostly copies (see .explain_reuse)
        from .explain_reuse import spans

        workers = max(1, len(client.scheduler_info().get("workers", {})))
        unit_bytes = job.explain.shard_size * int(np.prod(sample_shape)) * np.dtype(job.explain.heatmap_dtype).itemsize
        old_samples = json.loads((Path(job.reuse) / "manifest.json").read_text())["dataset"]["num_samples"]
        # units past OLD's end hold new samples, surely explained: each a task, and first, so that the real work
        # spreads over the workers before the cheap spans of units to copy or link fill in
        todo_spans = ([[u] for u in todo if u[2] > old_samples]
                      + spans([u for u in todo if u[2] <= old_samples], workers, unit_bytes))
        futures = [client.submit(explain_span, key, span, key=f"explain-{key}-{span[0][0]}-{span[-1][0]}",
                                 retries=3, pure=False) for span in todo_spans]
    else:
        futures = [client.submit(explain_unit, key, unit, start, stop, key=f"explain-{key}-{unit}", retries=3,
                                 pure=False) for unit, start, stop in todo]
    initial = num_samples - sum(stop - start for _, start, stop in todo)
    finished = {}  # unit → its task's counts
    with tqdm(total=num_samples, initial=initial, desc="explain", unit="sample", disable=not progress,
              leave=False) as bar:
        for future in as_completed(futures):
            result = future.result()
            for info in result if isinstance(result, list) else [result]:
                finished[info["unit"]] = info
                bar.update(info["samples"])
    if todo:
        client.unregister_worker_plugin(f"unhans-explain-{key}")
    infos = [finished.get(u) or markers.unit_info(STAGE, u) or {} for u, _, _ in units]  # earlier attempts': markers
    reused = sum(int(info.get("reused", 0)) for info in infos)
    return {"units": len(units), "computed_units": len(todo), "reused_samples": reused,
            "explained_samples": num_samples - reused, "quarantined": sum(int(info.get("quarantined", 0)) for info in infos)}


def quarantine_summary(run_dir: Path, limit: int = 10) -> tuple[int, list[str]]:
    """(number of quarantined samples, up to ``limit`` lines 'sample id, source: reason')."""
    import pyarrow.compute as pc

    from unhans.storage import read_table

    table = read_table(run_dir, SAMPLES_TABLE, columns=["sample_id", "source", "status", "error"])
    bad = table.filter(pc.not_equal(table.column("status"), "ok")).sort_by("sample_id")
    lines = [f"sample {r['sample_id']} ({r['source']}): {r['error']}" for r in bad.slice(0, limit).to_pylist()]
    return bad.num_rows, lines


def run(ctx) -> None:
    """The audit's explain stage: every sample of the input, unit by unit, on the Dask cluster."""
    import time

    config = ctx.config
    info = ctx.manifest()["dataset"]
    record_features = ctx.trajectory_store() is None
    reuse = None
    if ctx.reuse is not None:
        from unhans.pipeline.config import to_dict

        from .explain_reuse import reuse_blockers

        blockers = reuse_blockers(Path(ctx.reuse), ctx.manifest(), to_dict(config), record_features)
        if blockers:
            print(f"explain: not reusing {ctx.reuse}: " + "; ".join(blockers) + " — explaining every sample",
                  file=sys.stderr)
        else:
            reuse = str(Path(ctx.reuse).resolve())
    job = ExplainJob(run_dir=str(ctx.layout.root.resolve()), input=ctx.input_spec(), model=ctx.model_spec(),
                     explain=config.explain, threads=config.cluster.threads_per_worker,
                     record_features=record_features, reuse=reuse)
    ctx.start_cluster(warm=worker_imports(config.explain, job.model))  # usually under way since the data stage
    client = ctx.client()
    start = time.perf_counter()
    ctx.log(f"explain: {config.explain.method}" + (f" {config.explain.composite}" if config.explain.method == "lrp" else ""))
    counts = run_explain_stage(job, client, num_samples=info["num_samples"],
                               sample_shape=tuple(info["sample_shape"]), progress=not ctx.quiet)
    seconds = time.perf_counter() - start
    quarantined = counts.pop("quarantined")
    examples = quarantine_summary(ctx.layout.root)[1] if quarantined else []  # the table is read only when needed
    ctx.markers.mark_stage(STAGE, seconds=seconds, quarantined=quarantined, **counts)
    ctx.log(f"explain: {info['num_samples']} heatmaps in {seconds:.1f}s "
            f"({counts['computed_units']}/{counts['units']} units computed now"
            + (f"; {counts['reused_samples']} taken from {reuse}" if reuse else "") + ")")
    if quarantined:
        print(f"explain: {quarantined} sample(s) quarantined (left out of the analysis, listed in "
              f"tables/samples):", file=sys.stderr)
        for line in examples:
            print(f"  {line}", file=sys.stderr)
