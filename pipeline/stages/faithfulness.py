"""The faithfulness stage: does the audit's own explainer track what the model does?

On a stratified subsample (``faithfulness.samples`` explained samples, proportional to each
explained class, seeded) the configured explainer is judged against a random ordering and the
plain gradient (:mod:`unhans.explainers.explainer_check`): region-perturbation curves and cascading
parameter randomization. The subsample is cut into one block per Dask worker; each block is one
task that reads its samples, builds the model and explains on the worker's device. The pooled
verdict goes to ``RUN/faithfulness.json`` (summary.json's ``faithfulness`` block, the report's
section); when the heatmaps fail a check the audit says so on stderr, in the report and in the
summary: the SpRAy clusters and Clever-Hans ranking rest on them.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from .context import AuditContext
from .explain import ExplainJob, build_explainer

STAGE = "faithfulness"


def stratified_subsample(targets: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Indices of ``count`` entries (all if fewer), each class represented in proportion to its size (seeded).

    Every index gets a key (its position in a random order of its class + 0.5) / class size; the
    ``count`` smallest keys are taken, so each class contributes its share, rounded.
    """
    targets = np.asarray(targets)
    if count >= len(targets):
        return np.arange(len(targets))
    rng = np.random.default_rng(seed)
    keys = np.empty(len(targets))
    for k in np.unique(targets):
        members = np.flatnonzero(targets == k)
        keys[rng.permutation(members)] = (np.arange(len(members)) + 0.5) / len(members)
    jitter = rng.random(len(targets)) * 1e-9  # equal keys across classes: a seeded order, not the class order
    return np.sort(np.argsort(keys + jitter, kind="stable")[:count])


def judge_block(job: ExplainJob, ids: list[int], targets: list[int], settings, block: int) -> dict:
    """A Dask task: the explainer check (:func:`unhans.explainers.explainer_check.check_explainer`) on ``ids``."""
    import torch

    from unhans.explainers.explainer_check import check_explainer
    from unhans.explainers.registry import make_explainer

    from ..devices import limit_threads, resolve_device
    from ..model_loading import build_model
    from ..sources import SampleImages

    limit_threads(job.threads)
    device = resolve_device(job.explain.device)
    images = SampleImages(job.open_source())[np.asarray(ids)]  # contiguous ids read as one range
    model = build_model(job.model, device)
    x = torch.from_numpy(images).to(device)
    target = torch.as_tensor(targets, dtype=torch.long, device=device)

    def explain(m, xs, ts):
        return build_explainer(m, job.explain)(xs, ts).sum(1)

    def gradient(m, xs, ts):
        return make_explainer(m, "gradient")(xs, ts).sum(1)

    return check_explainer(model, explain, gradient, x, target, settings, block=block)


def _finite(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def settings_for(config, sample_shape) -> object:
    from unhans.explainers.explainer_check import CheckSettings

    spatial = sample_shape[1:]
    region = config.region or max(1, min(spatial) // 8)
    return CheckSettings(region=region, steps=config.steps, replacement=config.replacement,
                         randomization=config.randomization, similarity_limit=config.similarity_limit,
                         seed=config.seed)


def run(ctx: AuditContext) -> None:
    from unhans.explainers.explainer_check import verdict
    from unhans.storage import read_table
    from unhans.storage.atomic import write_json_atomic

    config = ctx.config.faithfulness
    if not config.enabled:
        ctx.markers.mark_stage(STAGE, skipped=True)
        ctx.log("faithfulness: disabled (faithfulness.enabled: false)")
        return
    start = time.perf_counter()
    samples = read_table(ctx.layout.root, "samples", columns=["sample_id", "target", "status"]).sort_by("sample_id")
    ok = samples.column("status").to_numpy(zero_copy_only=False) == "ok"
    ids = samples.column("sample_id").to_numpy()[ok]
    targets = samples.column("target").to_numpy()[ok]
    chosen = stratified_subsample(targets, config.samples, config.seed)
    if not len(chosen):
        ctx.markers.mark_stage(STAGE, skipped=True)
        print("faithfulness: no explained sample to check the heatmaps on (every sample quarantined)", file=sys.stderr)
        return
    info = ctx.manifest()["dataset"]
    settings = settings_for(config, tuple(info["sample_shape"]))
    job = ExplainJob(run_dir=str(ctx.layout.root.resolve()), input=ctx.input_spec(), model=ctx.model_spec(),
                     explain=ctx.config.explain, threads=ctx.config.cluster.threads_per_worker)
    client = ctx.client()
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    blocks = [b for b in np.array_split(chosen, min(workers, len(chosen))) if len(b)]
    futures = [client.submit(judge_block, job, ids[b].tolist(), targets[b].tolist(), settings, i,
                             key=f"faithfulness-{job.key()}-{i}", retries=2, pure=False)
               for i, b in enumerate(blocks)]
    results = client.gather(futures)
    summary = verdict(results, ctx.config.explain.method, settings)
    summary["sample_ids"] = ids[chosen].tolist()
    summary["seconds"] = round(time.perf_counter() - start, 3)
    write_json_atomic(ctx.layout.faithfulness, _finite(summary))
    ctx.markers.mark_stage(STAGE, samples=summary["samples"], trustworthy=summary["trustworthy"])
    ctx.log(f"faithfulness: {summary['samples']} samples, AOPC {summary['aopc']['explainer']:.3f} "
            f"(random {summary['aopc']['random']:.3f}, gradient {summary['aopc']['gradient']:.3f})"
            + (f", randomized heatmaps correlate {summary['randomization']['final']:.2f}"
               if "randomization" in summary else ""))
    for warning in summary["warnings"]:
        print(f"WARNING: {warning}. The audit's findings rest on these heatmaps and are not trustworthy.",
              file=sys.stderr, flush=True)
