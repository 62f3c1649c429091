"""The SpRAy stage: per-class analysis as Dask tasks, classes in parallel, resumable class by class.

The client only plans and gathers small summaries (:mod:`.spray_tasks` does the work):

1. one task per part (a contiguous range of shards) reads its heatmaps once, writes them grouped
   by class (:mod:`unhans.storage.class_maps`) and sums their relevance-share maps (the "other
   classes" baseline of the Clever-Hans evidence): one (H, W) map each. In a shuffled dataset a
   class sits in every shard; without this pass every class would read the whole store;
2. with more than ``spray.recurring_classes`` classes, a screen (tasks of :data:`SCREEN_BATCH` classes,
   window sums only) picks the classes the recurring-pattern search runs on;
3. one task per class reads only that class's rows of the grouped maps, runs SpRAy (pooled, normalized heatmaps
   → kNN graph → spectral embedding, eigengap clustering, UMAP map) and the Clever-Hans evidence
   (a fixed-window candidate from the SpRAy clusters, a region candidate of any shape, and a
   recurring-pattern candidate found anywhere where the screen chose the class),
   writes its part of the ``spray`` table, its cluster means and its marker, and returns its
   summary; a rerun skips classes with a marker (their summary is in the marker);
4. the verdict (:mod:`unhans.spray.verdict`): each detector's best classes, its outlier classes and
   (with many classes) a reference spread over its ranking get a counterfactual check, one task each; a class is flagged when its candidate is an outlier
   among classes (its score, or the effect of its check) and the check says its paste raises p(class). Each class's summary gets its ``verdict``, and its
   ``candidate`` becomes the one the verdict speaks of (the pixel-pattern one or the region one);
5. shard tasks find other classes' samples that carry the pattern of a flagged pixel-pattern
   candidate: those samples become artifact suspects too. Searching every class's candidate would
   cost classes x samples pattern checks for nothing.

Memory: a task holds one class (or one shard); the client holds per-sample ids, classes and
scales (a few bytes per sample) and the per-class summaries.
"""
from __future__ import annotations

import numpy as np

from .context import AuditContext
from .spray_tasks import REGION_ALTERNATIVES, STAGE, UNASSIGNED_PART, SprayJob, SprayPlugin, plugin_name, region_score_column
from .spray_tasks import analyze_class, confirm, find_carriers, regroup, screen_classes

PART_BYTES = 128 << 20  # class-grouped maps per regroup task (float32 H x W per sample)
MIN_PARTS = 8  # small runs still spread the regroup pass over the workers
PIXEL_STD_SAMPLES = 5000
REFERENCE_SAMPLES = 256  # evenly spaced inputs of all classes: the recurring search's "other classes" sample


def run(ctx: AuditContext) -> None:
    import time

    from unhans.storage import remove_class_maps
    from unhans.storage.atomic import write_json_atomic

    client = ctx.client()  # started by an earlier stage, or now (not counted: a stage's seconds are its own work)
    start = time.perf_counter()
    phases: dict[str, float] = {}
    plan = _Plan(ctx)
    job = SprayJob(run_dir=str(ctx.layout.root.resolve()), input=ctx.input_spec(), model=ctx.model_spec(),
                   spray=ctx.config.spray, window=plan.window, pixel_std=plan.pixel_std(ctx),
                   threads=ctx.config.cluster.threads_per_worker)
    client.register_plugin(SprayPlugin(job), name=plugin_name(job))
    phases["plan"] = time.perf_counter() - start
    try:
        key = job.key()
        summaries = _class_summaries(ctx, client, key, plan, phases)
        mark = time.perf_counter()
        target = client.scatter(plan.target, broadcast=True)
        verdicts = _verdicts(ctx, client, key, plan, summaries, target)
        phases["confirm"] = time.perf_counter() - mark
        mark = time.perf_counter()
        flagged = [s["candidate"] for s in summaries
                   if verdicts[s["class_id"]].flagged and s["candidate"]["placement"] != "region"]
        carriers = {s["class_id"]: {} for s in summaries}
        if flagged:  # other classes' samples carrying a flagged pixel pattern
            futures = [client.submit(find_carriers, key, s, e, plan.target[s:e], flagged, pure=False, retries=3)
                       for s, e in plan.shards()]
            for found in client.gather(futures):
                for class_id, (ids, scores) in found.items():
                    carriers[class_id].update(zip(ids, scores or [None] * len(ids)))
        for summary in summaries:
            candidate = summary["candidate"]
            if candidate is None:
                continue
            found = carriers[summary["class_id"]]
            candidate["other_members"] = sorted(found)
            if candidate.get("placement") == "recurring":  # their artifact score against this pattern (flags stage)
                candidate["other_scores"] = [found[i] for i in candidate["other_members"]]
        phases["carriers"] = time.perf_counter() - mark
    finally:
        client.unregister_worker_plugin(plugin_name(job))
    _write_unassigned(ctx, plan)
    remove_class_maps(ctx.layout.root)  # a copy of the heatmaps, needed only while classes are analyzed
    write_json_atomic(ctx.layout.spray, {"window": plan.window, "pixel_std": job.pixel_std, "classes": summaries})
    seconds = time.perf_counter() - start
    ctx.markers.mark_stage(STAGE, classes=len(summaries), seconds=seconds, clusters=sum(s["n_clusters"] for s in summaries),
                           phases={k: round(v, 3) for k, v in phases.items()})
    ctx.log(f"spray: {len(summaries)} classes, {sum(s['n_clusters'] for s in summaries)} clusters in {seconds:.1f}s ("
            + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items()) + ")")


DETECTORS = {"pattern": "candidate", "region": "region_candidate"}  # verdict detector → summary key


def _verdicts(ctx: AuditContext, client, key: str, plan: "_Plan", summaries: list[dict], target) -> dict:
    """Counterfactual checks of the planned candidates and every class's verdict (module docstring, step 3).
    Sets each summary's ``verdict`` and ``candidate`` (the verdict's candidate, with its ``confirmation``)."""
    from unhans.spray import decide, plan_checks

    by_class = {s["class_id"]: s for s in summaries}
    scores = {d: {c: (s[field] or {}).get("score", 0.0) for c, s in by_class.items()} for d, field in DETECTORS.items()}
    planned = plan_checks(scores, check_all=ctx.config.spray.confirm == "all")
    options = {(d, c): [by_class[c][DETECTORS[d]]] + (by_class[c].get("region_alternatives") or [] if d == "region" else [])
               for d, c in planned}
    futures = {key_: [client.submit(confirm, key, cand, target, pure=False, retries=3) for cand in cands]
               for key_, cands in options.items()}
    confirmations = {}
    for (d, c), results in zip(futures, client.gather(list(futures.values()))):
        for cand, result in zip(options[(d, c)], results):
            cand["confirmation"] = result
        # of a class's alternatives (both halves of a split), the one whose paste moves the model most
        best = max(range(len(results)), key=lambda i: (results[i]["confirmed"], results[i]["ci_low"]))
        by_class[c][DETECTORS[d]] = options[(d, c)][best]
        by_class[c][DETECTORS[d]]["alternative"] = best
        confirmations[(d, c)] = results[best]
    verdicts = decide(scores, confirmations)
    for c, summary in by_class.items():
        verdict = verdicts[c]
        summary["verdict"] = verdict.to_dict()
        pattern = summary["candidate"]
        if verdict.detector:
            summary["candidate"] = by_class[c][DETECTORS[verdict.detector]]
            summary["candidate"]["detector"] = verdict.detector
        if pattern is not None and summary["candidate"] is not pattern:
            summary["pattern_candidate"] = pattern
        if verdict.checked or verdict.flagged:
            ctx.log(f"spray: class {plan.name(c)}: {verdict.reason}")
    return verdicts


class _Plan:
    """What the client knows per sample: explained class (-1: none), key, mislabel flag."""

    def __init__(self, ctx: AuditContext):
        from unhans.storage import open_heatmap_array, read_table

        root = ctx.layout.root
        samples = read_table(root, "samples", columns=["sample_id", "key", "target", "status"]).sort_by("sample_id")
        ok = np.asarray(samples.column("status").to_pylist()) == "ok"
        self.target = np.where(ok, samples.column("target").to_numpy(), -1).astype(np.int64)
        self.keys = samples.column("key").to_pylist()
        dynamics = read_table(root, "dynamics", columns=["sample_id", "mislabel_suspect"]).sort_by("sample_id")
        self.mislabel = np.asarray(dynamics.column("mislabel_suspect").to_numpy(zero_copy_only=False), np.float64)
        array = open_heatmap_array(root)
        self.shard = int(array.shards[0]) if array.shards else int(array.chunks[0])
        side = min(int(v) for v in array.shape[-2:])  # a time series' plane may be far from square
        self.window = min(side, max(2, side // 4))
        n_shards = -(-len(self.target) // self.shard)
        by_memory = max(1, PART_BYTES // (4 * int(np.prod(array.shape[-2:])) * self.shard))
        self.part_rows = self.shard * max(1, min(by_memory, -(-n_shards // MIN_PARTS)))
        self.classes = np.unique(self.target[self.target >= 0])
        self.names = ctx.class_names()

    def name(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else str(class_id)

    def shards(self) -> list[tuple[int, int]]:
        n = len(self.target)
        return [(s, min(s + self.shard, n)) for s in range(0, n, self.shard)]

    def parts(self) -> list[tuple[int, int]]:
        """Ranges of the regroup pass: whole shards, about :data:`PART_BYTES` of maps each."""
        n = len(self.target)
        return [(s, min(s + self.part_rows, n)) for s in range(0, n, self.part_rows)]

    def pixel_std(self, ctx: AuditContext) -> float:
        """The inputs' pixel standard deviation, from up to 5000 evenly spaced samples."""
        from ..sources import SampleImages

        ok = np.flatnonzero(self.target >= 0)
        sample = ok[:: max(1, len(ok) // PIXEL_STD_SAMPLES)]
        return float(np.asarray(SampleImages(ctx.source())[sample], dtype=np.float32).std()) or 1.0


def _class_summaries(ctx: AuditContext, client, key: str, plan: _Plan, phases: dict[str, float]) -> list[dict]:
    """Every class's summary: from its marker when done earlier, else from its task (classes in parallel)."""
    import time

    from distributed import as_completed
    from tqdm.auto import tqdm

    done = {int(c): (ctx.markers.unit_info(STAGE, int(c)) or {}).get("summary")
            for c in ctx.markers.done_units(STAGE)}
    todo = [int(c) for c in plan.classes if done.get(int(c)) is None]
    summaries = {c: s for c, s in done.items() if s is not None and c in set(plan.classes.tolist())}
    if todo:
        mark = time.perf_counter()
        share_total = _regroup(ctx, client, key, plan)
        phases["regroup"] = time.perf_counter() - mark
        mark = time.perf_counter()
        total_ok = int((plan.target >= 0).sum())
        share_total = client.scatter(share_total, broadcast=True)
        searched = _recurring_classes(ctx, client, key, plan, share_total, total_ok)
        phases["screen"] = time.perf_counter() - mark
        mark = time.perf_counter()
        order = np.argsort(plan.target, kind="stable")
        bounds = np.searchsorted(plan.target[order], [todo, np.add(todo, 1)])
        classified = np.flatnonzero(plan.target >= 0)
        reference = client.scatter(classified[:: max(1, len(classified) // REFERENCE_SAMPLES)], broadcast=True)
        futures = []
        for c, lo, hi in zip(todo, *bounds):
            idx = order[lo:hi]
            futures.append(client.submit(
                analyze_class, key, c, idx, [plan.keys[i] for i in idx], plan.mislabel[idx],
                share_total, total_ok - len(idx), reference, c in searched, pure=False, retries=3,
                key=f"spray-{key}-{c}"))
        with tqdm(total=len(plan.classes), initial=len(plan.classes) - len(todo), desc="spray", unit="class",
                  disable=ctx.quiet, leave=False) as bar:
            for future in as_completed(futures):
                summary = future.result()
                summaries[summary["class_id"]] = summary
                bar.update(1)
        phases["classes"] = time.perf_counter() - mark
        for c in todo:  # worker-seconds per part of the class task, summed over the classes done now
            for part, seconds in (summaries[c].get("seconds") or {}).items():
                phases[f"classes.{part}"] = phases.get(f"classes.{part}", 0.0) + seconds
    for summary in summaries.values():  # timings stay in the markers: spray.json is the same on every rerun
        summary.pop("seconds", None)
    return [summaries[int(c)] for c in plan.classes]


SCREEN_BATCH = 64  # classes per screening task


def _recurring_classes(ctx: AuditContext, client, key: str, plan: _Plan, share_total, total: int) -> set[int]:
    """The classes the recurring search runs on: every class when there are at most
    ``spray.recurring_classes`` (0: always every class), else that many with the largest
    :func:`unhans.spray.recurring_screen` (computed from the class-grouped maps of every class, so a
    resumed run picks the same ones)."""
    limit = ctx.config.spray.recurring_classes
    classes = [int(c) for c in plan.classes]
    if limit <= 0 or len(classes) <= limit:
        return set(classes)
    counts = np.bincount(plan.target[plan.target >= 0], minlength=max(classes) + 1)
    batches = [classes[i:i + SCREEN_BATCH] for i in range(0, len(classes), SCREEN_BATCH)]
    futures = [client.submit(screen_classes, key, b, [int(counts[c]) for c in b], share_total, total,
                             pure=False, retries=3) for b in batches]
    values = np.concatenate([np.asarray(v, np.float64) for v in client.gather(futures)])
    chosen = np.argsort(-values, kind="stable")[:limit]
    ctx.log(f"spray: the recurring-pattern search runs on the {limit} of {len(classes)} classes whose relevance "
            f"concentrates most (screen {values[chosen[-1]]:.3f} and above; median {np.median(values):.3f})")
    return {classes[i] for i in chosen}


def _regroup(ctx: AuditContext, client, key: str, plan: _Plan) -> np.ndarray:
    """The class-grouped maps (parts written earlier are kept); returns the summed share maps."""
    from unhans.storage import class_maps_parts_done

    done = class_maps_parts_done(ctx.layout.root)
    sums: dict[int, np.ndarray] = {}
    futures = {}
    for part, (s, e) in enumerate(plan.parts()):
        if part in done:
            with np.load(ctx.layout.class_maps_part(part)[1]) as index:
                sums[part] = index["share_sum"]
        else:
            futures[part] = client.submit(regroup, key, part, s, e, plan.target[s:e], pure=False, retries=3)
    sums.update(zip(futures, client.gather(list(futures.values()))))
    return np.sum([sums[p] for p in sorted(sums)], axis=0, dtype=np.float64)  # part order: same bits on a rerun


def _write_unassigned(ctx: AuditContext, plan: _Plan) -> None:
    """The spray table's rows for samples without a class (quarantined), so every sample has a row."""
    import pyarrow as pa

    from unhans.storage import write_part

    idx = np.flatnonzero(plan.target < 0)
    n = len(idx)
    write_part(ctx.layout.root, STAGE, UNASSIGNED_PART, pa.table({
        "sample_id": pa.array(idx, pa.int64()), "key": pa.array([plan.keys[i] for i in idx], pa.string()),
        "class_id": pa.array(np.full(n, -1), pa.int64()), "cluster": pa.array(np.full(n, -1), pa.int64()),
        "candidate_member": pa.array(np.zeros(n, bool)), "artifact_score": pa.array(np.zeros(n), pa.float32()),
        "pixel_artifact_score": pa.array(np.zeros(n), pa.float32()),
        **{region_score_column(i): pa.array(np.zeros(n), pa.float32()) for i in range(REGION_ALTERNATIVES)},
        "umap_x": pa.array(np.full(n, np.nan), pa.float32()), "umap_y": pa.array(np.full(n, np.nan), pa.float32()),
    }))
