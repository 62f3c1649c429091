"""The SpRAy stage's Dask tasks: everything that reads heatmaps or inputs runs on the workers.

Each worker opens the run's source (and, for confirmations, builds the model) once, through
:class:`SprayPlugin`. Tasks read only what they need from the store (a contiguous range of
heatmaps, or one class's rows of the class-grouped maps), write their own outputs (a class's part of the ``spray``
table, its cluster means, its marker) and return small summaries. The numba code of UMAP and
NN-descent is compiled once per worker process, on its first class, never once per class.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin

from ..config import InputConfig, ModelConfig, SprayConfig

STAGE = "spray"
UNASSIGNED_PART = 99_999_999  # the spray table's part for samples with no class (quarantined)
REGION_ALTERNATIVES = 2  # region candidates per class (columns region_artifact_score, region_artifact_score1)


def region_name(alternative: int) -> str:
    """The cluster-means key of a class's region candidate ``alternative`` (0 = best score): "region", "region1"."""
    return f"region{alternative or ''}"


def region_score_column(alternative: int) -> str:
    """The spray table column of its per-sample scores: "region_artifact_score", "region_artifact_score1"."""
    return f"region_artifact_score{alternative or ''}"


@dataclass(frozen=True)
class SprayJob:
    """What every spray task needs besides its own arguments (picklable, small)."""

    run_dir: str
    input: InputConfig
    model: ModelConfig
    spray: SprayConfig
    window: int
    pixel_std: float
    threads: int = 1

    def key(self) -> str:
        import hashlib
        import json
        from dataclasses import asdict

        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:12]


class _Loaded:
    def __init__(self, job: SprayJob):
        from unhans.storage.layout import RunLayout

        from ..devices import limit_threads
        from ..sample_planes import SamplePlanes
        from ..sources import SampleImages, open_source

        limit_threads(job.threads)
        self.job = job
        self.images = SamplePlanes(SampleImages(open_source(job.input, RunLayout(job.run_dir).image_index)))
        self._predict = None
        self._class_maps = None
        self._relevance = None

    def relevance(self):
        """The run's relevance (heatmaps with their scales applied), opened on first use."""
        if self._relevance is None:
            from unhans.storage import Relevance

            self._relevance = Relevance(self.job.run_dir)
        return self._relevance

    def class_maps(self):
        """The class-grouped maps (opened on first use: after every part is written)."""
        if self._class_maps is None:
            from unhans.storage import ClassMaps

            self._class_maps = ClassMaps(self.job.run_dir)
        return self._class_maps

    def predict_proba(self):
        """Class probabilities of the audited model (built on first use, on the CPU)."""
        if self._predict is None:
            import torch

            from ..model_loading import build_model

            model = build_model(self.job.model, "cpu")

            def predict(x: np.ndarray) -> np.ndarray:  # x: planes (n, C, H, W)
                with torch.no_grad():
                    return torch.softmax(model(torch.from_numpy(self.images.model_input(x))), dim=1).numpy()

            self._predict = predict
        return self._predict


class SprayPlugin(WorkerPlugin):
    """Opens the job's source once per worker."""

    def __init__(self, job: SprayJob):
        self.job = job
        self.loaded = None

    def setup(self, worker=None):
        self.loaded = _Loaded(self.job)

    def teardown(self, worker=None):
        self.loaded = None


def plugin_name(job: SprayJob) -> str:
    return f"unhans-spray-{job.key()}"


def _loaded(job_key: str) -> _Loaded:
    from distributed import get_worker

    return get_worker().plugins[f"unhans-spray-{job_key}"].loaded


def regroup(job_key: str, part: int, start: int, stop: int, target: np.ndarray) -> np.ndarray:
    """Write samples [start, stop) that have a class as one part of the class-grouped maps
    (:mod:`unhans.storage.class_maps`), shard by shard; return the sum of their relevance-share
    maps (H, W), which the part's index keeps too (a rerun reads it from there)."""
    from unhans.spray import relevance_shares
    from unhans.storage import write_class_maps_part

    loaded = _loaded(job_key)
    relevance = loaded.relevance()
    ok = target >= 0
    maps = np.empty((int(ok.sum()),) + tuple(relevance.array.shape[-2:]), np.float32)
    total = np.zeros(relevance.array.shape[-2:])
    filled = 0
    for first, last, block in relevance.shards(start, stop):
        keep = ok[first - start:last - start]
        if not keep.any():
            continue
        block = block[keep]
        block = block.sum(axis=1) if block.ndim == 4 else block  # channels summed
        maps[filled:filled + len(block)] = block
        total += relevance_shares(block).sum(0)
        filled += len(block)
    ids = np.flatnonzero(ok) + start
    write_class_maps_part(loaded.job.run_dir, part, ids, target[ok], maps, share_sum=total)
    return total


class _Clock:
    """Seconds spent in each part of a task (the stage sums them over classes: worker-seconds per part)."""

    def __init__(self):
        import time

        self._now = time.perf_counter
        self._mark = self._now()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = self._now()
        self.laps[name] = round(self.laps.get(name, 0.0) + now - self._mark, 4)
        self._mark = now


def screen_classes(job_key: str, classes: list[int], counts: list[int], share_total: np.ndarray,
                   total: int) -> list[float]:
    """:func:`unhans.spray.recurring_screen` of each of ``classes`` (``counts``: their sizes; ``total``:
    samples with a class), from the class-grouped maps: which classes the recurring search runs on."""
    from unhans.spray import recurring_screen, relevance_shares

    loaded = _loaded(job_key)
    out = []
    for class_id, count in zip(classes, counts):
        _, heatmaps = loaded.class_maps().read(int(class_id))
        shares = relevance_shares(heatmaps)
        other_mean = (share_total - shares.sum(0)) / max(total - count, 1)
        out.append(recurring_screen(shares, other_mean, loaded.job.window))
    return out


def analyze_class(job_key: str, class_id: int, idx: np.ndarray, keys: list[str],
                  mislabel_flags: np.ndarray, share_total: np.ndarray, others: int, reference: np.ndarray,
                  search_recurring: bool = True) -> dict:
    """SpRAy and Clever-Hans evidence of one class; writes its table part, means and marker; returns its summary.

    idx: the class's sample ids (sorted); its maps come from the class-grouped parts
    (:func:`regroup`); share_total: the summed share maps of every sample with a class;
    others: how many of those are not in this class; reference: ids of an evenly spaced sample
    of all classified samples (those of other classes are the recurring search's reference);
    search_recurring: whether the recurring search runs (the stage's screen, :func:`screen_classes`).

    Three detectors run: the fixed-window one on the SpRAy clusters (:func:`unhans.spray.class_evidence`),
    the recurring-pattern one (:func:`unhans.spray.recurring_evidence`; only where ``search_recurring``) and the region one
    (:func:`unhans.spray.region_evidence`: a mask of any shape from the SpRAy clusters' relevance). The
    class's pixel-pattern candidate (``candidate``, column ``artifact_score``) is the recurring one (the
    fixed-window one only where the recurring search finds no group); the region candidate is kept
    beside it (``region_candidate``, column ``region_artifact_score``), and the stage's verdict
    (:mod:`unhans.spray.verdict`) decides between them; the fixed-window one is kept
    (``pixel_candidate``, column ``pixel_artifact_score``) for comparison. On the embedded digits the recurring search found
    every fixed stamp too, and the fixed-window one alone flagged a class without any artifact
    (stamp scenario, seed 0, class 1), so it no longer flags.
    """
    import pyarrow as pa

    from unhans.spray import (analyze_group, class_evidence, normalize_features, pool_by_group, pool_heatmaps,
                              recurring_evidence, recurring_scores, region_evidence, region_relevance,
                              relevance_shares, sample_artifact_scores, umap_map)
    from unhans.storage import Markers, write_class_means, write_part
    from unhans.storage.class_embeddings import write_class_embedding

    loaded = _loaded(job_key)
    job, cfg = loaded.job, loaded.job.spray
    run = Path(job.run_dir)
    clock = _Clock()
    ids, heatmaps = loaded.class_maps().read(int(class_id))  # (M, H, W), scale applied, channels summed
    if not np.array_equal(ids, idx):
        raise RuntimeError(f"class {class_id}: the class-grouped maps hold {len(ids)} samples, the plan {len(idx)}; "
                           "rerun the audit (the spray stage rebuilds them)")
    shares = relevance_shares(heatmaps)
    features = normalize_features(pool_heatmaps(heatmaps, cfg.pool_size, cfg.relevance), cfg.normalize)
    clock.lap("read")
    analysis = analyze_group(features, n_neighbors=cfg.n_neighbors, max_clusters=cfg.max_clusters, seed=cfg.seed)
    clock.lap("spray")
    umap_xy = np.full((len(idx), 2), np.nan, np.float32)
    if cfg.umap:
        umap_xy[:] = umap_map(features, analysis.graph, seed=cfg.seed, spectral=analysis.embedding)
    clock.lap("umap")
    other_mean = (share_total - shares.sum(0)) / max(others, 1)
    class_images = np.asarray(loaded.images[idx], dtype=np.float32)
    fixed = class_evidence(shares, class_images, analysis.by_resolution, int(class_id), other_mean_share=other_mean,
                           pixel_std=job.pixel_std, window=job.window, mislabel_flags=mislabel_flags)
    clock.lap("fixed")
    recurring = None
    if search_recurring:
        others_ref = reference[np.isin(reference, idx, assume_unique=True, invert=True)]
        recurring = recurring_evidence(shares, class_images, int(class_id),
                                       other_images=np.asarray(loaded.images[others_ref], dtype=np.float32),
                                       other_mean_share=other_mean, pixel_std=job.pixel_std, window=job.window,
                                       mislabel_flags=mislabel_flags)
    clock.lap("recurring")
    regions = region_evidence(shares, analysis.by_resolution, int(class_id), other_mean_share=other_mean,
                              mislabel_flags=mislabel_flags, count=REGION_ALTERNATIVES)
    clock.lap("region")
    region_scores = [score for _, score in regions] + [np.zeros(len(idx))] * (REGION_ALTERNATIVES - len(regions))
    region = regions[0][0] if regions else None
    means = {str(c): heatmaps[analysis.clusters == c].mean(0) for c in range(analysis.n_clusters)}
    pixel_score = np.zeros(len(idx))
    if fixed is not None:
        pixel_score = sample_artifact_scores(shares, class_images, fixed, job.pixel_std)
    evidence, artifact_score = fixed, pixel_score
    if recurring is not None:  # the recurring search also finds fixed patterns, and is stricter about them
        evidence, artifact_score = recurring, recurring_scores(class_images, recurring, job.pixel_std)
    candidate_col = np.zeros(len(idx), bool)
    if evidence is not None:
        candidate_col[evidence.carriers] = True
        means["candidate"] = heatmaps[evidence.members].mean(0)
    for i, (found, _) in enumerate(regions):
        means[region_name(i)] = heatmaps[found.members].mean(0)
    for found in (fixed, recurring, *[found for found, _ in regions]):
        if found is not None:
            found.members = idx[found.members].tolist()  # class positions → sample ids
            found.carriers = idx[found.carriers].tolist()
    write_class_embedding(run, int(class_id), idx, analysis.embedding, analysis.eigenvalues[:cfg.max_clusters + 1],
                          umap_xy, analysis.by_resolution)
    pooled = pool_by_group(region_relevance(heatmaps, cfg.region_grid), analysis.clusters)
    summary = {
        "class_id": int(class_id), "num_samples": int(len(idx)), "k_candidates": analysis.k_candidates,
        "k_chosen": analysis.k_chosen, "n_clusters": analysis.n_clusters, "stability": analysis.stability,
        "eigengap": analysis.gap, "eigenvalues": analysis.eigenvalues[:cfg.max_clusters + 1].tolist(),
        "cluster_sizes": np.bincount(analysis.clusters).tolist(),
        "candidate": evidence.to_dict(with_members=True) if evidence is not None else None,
        "pixel_candidate": fixed.to_dict(with_members=True) if fixed is not None else None,
        "region_candidate": region.to_dict(with_members=True) if region is not None else None,
        "region_alternatives": [found.to_dict(with_members=True) for found, _ in regions[1:]],
        "region_share": {str(c): v["share"].tolist() for c, v in pooled.items()},
        "recurring_searched": bool(search_recurring),
    }
    write_part(run, STAGE, int(class_id), pa.table({
        "sample_id": pa.array(idx, pa.int64()),
        "key": pa.array(keys, pa.string()),
        "class_id": pa.array(np.full(len(idx), class_id), pa.int64()),
        "cluster": pa.array(analysis.clusters, pa.int64()),
        "candidate_member": pa.array(candidate_col),
        "artifact_score": pa.array(artifact_score, pa.float32()),
        "pixel_artifact_score": pa.array(pixel_score, pa.float32()),
        **{region_score_column(i): pa.array(region_scores[i], pa.float32())
           for i in range(REGION_ALTERNATIVES)},
        "umap_x": pa.array(umap_xy[:, 0], pa.float32()),
        "umap_y": pa.array(umap_xy[:, 1], pa.float32()),
    }))
    write_class_means(run, int(class_id), means)
    clock.lap("rest")
    summary["seconds"] = clock.laps  # worker-seconds per part, in the marker (the stage's phases sum them)
    Markers(run).mark_unit(STAGE, int(class_id), summary=summary)  # last: it vouches for the part and the means
    return summary


def find_carriers(job_key: str, start: int, stop: int, target: np.ndarray,
                  candidates: list[dict]) -> dict[int, tuple[list[int], list[float]]]:
    """Samples in [start, stop) explained as another class whose input carries a candidate's pattern,
    with their artifact score against it (class → (sample ids, scores))."""
    from unhans.spray import ClusterEvidence, pattern_carriers
    from unhans.spray.recurring_patterns import recurring_distances_many, scores_at

    loaded = _loaded(job_key)
    block = np.asarray(loaded.images[start:stop], dtype=np.float32)
    std = loaded.job.pixel_std
    found: dict[int, tuple[list[int], list[float]]] = {}
    labelled = np.flatnonzero(target >= 0)
    recurring = [ClusterEvidence.from_dict(c) for c in candidates if c.get("placement") == "recurring"]
    # every recurring pattern matched in one pass over the block's samples with a class (cheaper than
    # one pass per pattern over each one's other classes)
    matched = dict(zip((e.class_id for e in recurring), recurring_distances_many(block[labelled], recurring, std)))
    for candidate in candidates:
        evidence = ClusterEvidence.from_dict(candidate)
        other = np.flatnonzero((target >= 0) & (target != evidence.class_id))
        if len(other) == 0:
            found[evidence.class_id] = ([], [])
        elif evidence.placement == "recurring":
            dist = matched[evidence.class_id][0][np.searchsorted(labelled, other)]
            hits = dist <= evidence.pattern_cut
            found[evidence.class_id] = ((other[hits] + start).tolist(), scores_at(evidence, dist[hits]).tolist())
        else:
            hits = pattern_carriers(block[other], evidence, std)
            found[evidence.class_id] = ((other[hits] + start).tolist(), [])
    return found


def confirm(job_key: str, candidate: dict, target: np.ndarray) -> dict:
    """Counterfactual confirmation of one candidate (:func:`unhans.spray.confirm_candidate`; for a
    recurring pattern :func:`unhans.spray.confirm_recurring`, for a region :func:`unhans.spray.confirm_region`)."""
    from unhans.spray import ClusterEvidence, confirm_candidate, confirm_recurring, confirm_region

    loaded = _loaded(job_key)
    if candidate.get("placement") == "region":
        return confirm_region(loaded.predict_proba(), loaded.images, target, ClusterEvidence.from_dict(candidate),
                              seed=loaded.job.spray.seed).to_dict()
    if candidate.get("placement") == "recurring":
        return confirm_recurring(loaded.predict_proba(), loaded.images, target, ClusterEvidence.from_dict(candidate),
                                 pixel_std=loaded.job.pixel_std, seed=loaded.job.spray.seed).to_dict()
    result = confirm_candidate(loaded.predict_proba(), loaded.images, target, np.asarray(candidate["members"]),
                               tuple(candidate["window"]), candidate["class_id"], pixel_std=loaded.job.pixel_std,
                               seed=loaded.job.spray.seed)
    return result.to_dict()
