"""The SpRAy stage of the audit: per-class analysis over the run store, out of core in N.

Heatmaps are never loaded whole. One streaming pass over the Zarr shards sums each class's
relevance-share maps (the "other classes" baseline of the Clever-Hans evidence); then each
class's heatmaps are read by orthogonal selection, analysed (spray.analyze_group), and
dropped; a last streaming pass finds carriers of each candidate's pattern in other classes.
Memory is bounded by the largest class, not by the dataset.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import SprayConfig
from .context import AuditContext

STAGE = "spray"

CONFIRM_TOP = 3  # candidates (best scores first) checked by counterfactual pasting


class Explanations:
    """The run's relevance (:class:`unhans.storage.Relevance`) with each sample's explained class.

    ``target`` is -1 for quarantined samples, which every analysis leaves out.
    """

    def __init__(self, run: Path):
        from unhans.storage import Relevance, read_table

        self.relevance = Relevance(run)
        table = read_table(run, "samples", columns=["sample_id", "target", "status"]).sort_by("sample_id")
        ok = np.asarray(table.column("status").to_pylist()) == "ok"
        self.target = np.where(ok, table.column("target").to_numpy(), -1)
        self.sample_id = self.relevance.sample_id
        self.shard = self.relevance.shard

    def __len__(self) -> int:
        return len(self.relevance)

    @property
    def map_shape(self) -> tuple[int, ...]:
        return self.relevance.map_shape

    def take(self, idx: np.ndarray) -> np.ndarray:
        return self.relevance.take(idx)

    def shards(self):
        return self.relevance.shards()


def _class_share_sums(explanations: Explanations, classes: np.ndarray) -> dict[int, np.ndarray]:
    from unhans.spray import relevance_shares

    sums = {int(k): np.zeros(explanations.map_shape) for k in classes}
    for start, stop, maps in explanations.shards():
        shares = relevance_shares(maps)
        target = explanations.target[start:stop]
        for k in np.unique(target[target >= 0]):
            sums[int(k)] += shares[target == k].sum(0)
    return sums


def _predictor(model_spec):
    import torch

    from ..model_loading import build_model

    model = build_model(model_spec, "cpu")

    def predict_proba(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()

    return predict_proba


def run(ctx: AuditContext) -> None:
    """The audit's SpRAy stage over the run store, the input read from its source."""
    from ..sources import SampleImages

    summary = run_spray_stage(ctx, SampleImages(ctx.source()), ctx.config.spray, model_spec=ctx.model_spec())
    ctx.markers.mark_stage(STAGE, classes=summary["classes"])
    ctx.log(f"spray: {summary['classes']} classes, {summary['clusters']} clusters")


def run_spray_stage(ctx: AuditContext, images, cfg: SprayConfig, *, model_spec=None) -> dict:
    """Write tables/spray, spray.json and spray_cluster_means.npz; returns counts.

    images: the inputs as the model sees them, indexable by sorted id arrays and slices
    (:class:`unhans.pipeline.sources.SampleImages`). With ``model_spec``, the best candidates get
    a counterfactual confirmation.
    """
    import pyarrow as pa
    from tqdm.auto import tqdm

    from unhans.spray import (ClusterEvidence, analyze_group, class_evidence, confirm_candidate, normalize_features,
                       pattern_carriers, pool_by_group, pool_heatmaps, region_relevance, relevance_shares,
                       sample_artifact_scores, umap_map)
    from unhans.storage import read_table
    from unhans.storage.atomic import write_json_atomic, write_npz_atomic

    run, layout, quiet = ctx.layout.root, ctx.layout, ctx.quiet
    explanations = Explanations(run)
    n = len(explanations)
    target = explanations.target
    ok = target >= 0
    dynamics = read_table(run, "dynamics").sort_by("sample_id")
    mislabel_flags = np.asarray(dynamics.column("mislabel_suspect")).astype(np.float64)
    classes = np.unique(target[ok])
    share_sums = _class_share_sums(explanations, classes)
    share_total = sum(share_sums.values())
    sample = np.flatnonzero(ok)[:: max(1, int(ok.sum()) // 5000)]
    pixel_std = float(np.asarray(images[sample], dtype=np.float32).std()) or 1.0
    window = max(2, explanations.map_shape[-1] // 4)

    cluster_col = np.full(n, -1, np.int64)
    candidate_col = np.zeros(n, bool)
    artifact_score = np.zeros(n, np.float64)
    umap_xy = np.full((n, 2), np.nan, np.float32)
    report_classes, cluster_means = [], {}
    for k in tqdm(classes, desc="spray", unit="class", disable=quiet, leave=False):
        idx = np.flatnonzero(target == k)
        heatmaps = explanations.take(idx)
        shares = relevance_shares(heatmaps)
        features = normalize_features(pool_heatmaps(heatmaps, cfg.pool_size, cfg.relevance), cfg.normalize)
        analysis = analyze_group(features, n_neighbors=cfg.n_neighbors, max_clusters=cfg.max_clusters, seed=cfg.seed)
        cluster_col[idx] = analysis.clusters
        if cfg.umap:
            umap_xy[idx] = umap_map(features, analysis.graph, seed=cfg.seed, spectral=analysis.embedding)
        other_mean = (share_total - share_sums[int(k)]) / max(int(ok.sum()) - len(idx), 1)
        class_images = np.asarray(images[idx], dtype=np.float32)
        evidence = class_evidence(shares, class_images, analysis.by_resolution, int(k), other_mean_share=other_mean,
                                  pixel_std=pixel_std, window=window, mislabel_flags=mislabel_flags[idx])
        for c in range(analysis.n_clusters):
            cluster_means[f"{int(k)}_{c}"] = heatmaps[analysis.clusters == c].mean(0).sum(0).astype(np.float32)
        if evidence is not None:
            candidate_col[idx[evidence.carriers]] = True
            artifact_score[idx] = sample_artifact_scores(shares, class_images, evidence, pixel_std)
            cluster_means[f"{int(k)}_candidate"] = heatmaps[evidence.members].mean(0).sum(0).astype(np.float32)
            evidence.members = idx[evidence.members].tolist()  # class positions → sample ids
            evidence.carriers = idx[evidence.carriers].tolist()
        pooled = pool_by_group(region_relevance(heatmaps, cfg.region_grid), analysis.clusters)
        report_classes.append({
            "class_id": int(k), "num_samples": int(len(idx)), "k_candidates": analysis.k_candidates,
            "k_chosen": analysis.k_chosen, "n_clusters": analysis.n_clusters, "stability": analysis.stability,
            "eigengap": analysis.gap, "eigenvalues": analysis.eigenvalues[:cfg.max_clusters + 1].tolist(),
            "cluster_sizes": np.bincount(analysis.clusters).tolist(),
            "candidate": evidence.to_dict(with_members=True) if evidence is not None else None,
            "region_share": {str(c): v["share"].tolist() for c, v in pooled.items()},
        })

    if model_spec is not None:
        predict_proba = _predictor(model_spec)
        ranked = sorted((c for c in report_classes if c["candidate"]), key=lambda c: -c["candidate"]["score"])
        for info in ranked[:CONFIRM_TOP]:
            cand = info["candidate"]
            result = confirm_candidate(predict_proba, images, target, np.asarray(cand["members"]),
                                       tuple(cand["window"]), info["class_id"], pixel_std=pixel_std, seed=cfg.seed)
            cand["confirmation"] = result.to_dict()
            if not quiet:
                print(f"spray: class {info['class_id']} candidate {'confirmed' if result.confirmed else 'rejected'} "
                      f"(its pattern raises p(class) by {result.effect:+.3f}, 95% CI [{result.ci_low:+.3f}, "
                      f"{result.ci_high:+.3f}])", flush=True)

    # Carriers of a candidate's pattern that the model explains as another class (one streaming pass).
    candidates = [(info, ClusterEvidence(**{k: v for k, v in info["candidate"].items()
                                            if k not in ("confirmation", "window")},
                                         window=tuple(info["candidate"]["window"])))
                  for info in report_classes if info["candidate"]]
    carriers = {info["class_id"]: [] for info, _ in candidates}
    for start in range(0, n, explanations.shard):
        stop = min(start + explanations.shard, n)
        block = np.asarray(images[start:stop], dtype=np.float32)
        for info, evidence in candidates:
            other = (target[start:stop] >= 0) & (target[start:stop] != info["class_id"])
            if other.any():
                found = pattern_carriers(block[other], evidence, pixel_std)
                carriers[info["class_id"]].extend((np.flatnonzero(other)[found] + start).tolist())
    for info, _ in candidates:
        info["candidate"]["other_members"] = carriers[info["class_id"]]

    ctx.write_table(STAGE, pa.table({
        "sample_id": pa.array(explanations.sample_id, pa.int64()),
        "class_id": pa.array(target, pa.int64()),
        "cluster": pa.array(cluster_col, pa.int64()),
        "candidate_member": pa.array(candidate_col),
        "artifact_score": pa.array(artifact_score, pa.float32()),
        "umap_x": pa.array(umap_xy[:, 0], pa.float32()),
        "umap_y": pa.array(umap_xy[:, 1], pa.float32()),
    }))
    write_npz_atomic(layout.cluster_means, compressed=True, **cluster_means)
    write_json_atomic(layout.spray, {"window": window, "pixel_std": pixel_std, "classes": report_classes})
    return {"classes": len(classes), "clusters": sum(c["n_clusters"] for c in report_classes)}
