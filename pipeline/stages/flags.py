"""The flags stage: per-sample flags and scores, the Clever-Hans class ranking, and summary.json."""
from __future__ import annotations

import json

import numpy as np

from .context import AuditContext
from .flag_concepts import latent_concepts
from .spray_tasks import region_score_column

STAGE = "flags"
SUMMARY_SCHEMA_VERSION = 2
TIMED_STAGES = ("data", "train", "explain", "faithfulness", "dynamics", "spray")


def run(ctx: AuditContext) -> None:
    import pyarrow as pa

    from unhans.spray import ClassVerdict, ClusterEvidence, ranking
    from unhans.spray.counterfactual import MIN_EFFECT
    from unhans.spray.verdict import EFFECT_FLAG_Z, FLAG_Z, SCORE_PATH_RISE
    from unhans.storage import read_table
    from unhans.storage.atomic import write_json_atomic

    from ..config import to_dict

    layout, config = ctx.layout, ctx.config
    spray_info = json.loads(layout.spray.read_text())
    classes = spray_info["classes"]
    verdicts = {c["class_id"]: ClassVerdict(**c["verdict"]) for c in classes}
    chosen = {c["class_id"]: c["candidate"] for c in classes if c["candidate"] is not None}
    ranked = ranking(verdicts)
    flagged = [ClusterEvidence.from_dict(chosen[k]) for k in ranked if verdicts[k].flagged]  # in ranking order
    for e in flagged:
        e.flagged = True
    samples = read_table(layout.root, "samples", columns=["sample_id", "status"]).sort_by("sample_id")
    status = samples.column("status").to_numpy(zero_copy_only=False)
    spray_table = read_table(layout.root, "spray").sort_by("sample_id")
    class_of = spray_table.column("class_id").to_numpy()
    artifact_score = spray_table.column("artifact_score").to_numpy().astype(np.float64)
    for k, candidate in chosen.items():  # each class's per-sample scores against the candidate its verdict speaks of
        if candidate.get("placement") == "region":
            column = spray_table.column(region_score_column(candidate.get("alternative", 0)))
            artifact_score[class_of == k] = column.to_numpy()[class_of == k]
    dynamics = read_table(layout.root, "dynamics").sort_by("sample_id")
    mislabel_score = dynamics.column("mislabel_score").to_numpy(zero_copy_only=False).astype(np.float64)
    mislabel_suspect = dynamics.column("mislabel_suspect").to_numpy(zero_copy_only=False).astype(bool)
    n = len(status)
    artifact_suspect = np.zeros(n, bool)
    for e in flagged:
        artifact_suspect[e.carriers] = True
        artifact_suspect[e.other_members] = True
    concepts = latent_concepts(ctx, flagged, status == "ok", artifact_suspect, artifact_score)
    for candidate in chosen.values():  # samples of other classes carrying a searched recurring pattern
        other_scores = candidate.get("other_scores") or []
        ids = np.asarray(candidate.get("other_members") or [], np.int64)[:len(other_scores)]
        if len(ids):
            artifact_score[ids] = np.maximum(artifact_score[ids], other_scores)
    ctx.write_table(STAGE, pa.table({
        "sample_id": pa.array(np.arange(n), pa.int64()),
        "artifact_score": pa.array(artifact_score, pa.float32()),
        "artifact_suspect": pa.array(artifact_suspect),
        "mislabel_score": pa.array(mislabel_score, pa.float32()),
        "mislabel_suspect": pa.array(mislabel_suspect),
    }))
    manifest = ctx.manifest()
    names = ctx.class_names()
    train_info = ctx.markers.stage_info("train") or {}
    dynamics_info = ctx.markers.stage_info("dynamics") or {}

    def name(k: int) -> str:
        return names[k] if 0 <= k < len(names) else str(k)

    summary = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "run": str(layout.root),
        "config": to_dict(config),
        "versions": manifest.get("versions", {}),
        "dataset": manifest.get("dataset", {}),
        "model": {**manifest.get("model", {}), "train_accuracy": train_info.get("train_accuracy"),
                  "test_accuracy": train_info.get("test_accuracy")},
        "samples": {"total": n, "explained": int((status == "ok").sum()),
                    "quarantined": int((status != "ok").sum())},
        "clever_hans": {
            "class_ranking": [{"class_id": k, "class_name": name(k), "score": verdicts[k].score,
                               "outlier": verdicts[k].outlier, "effect_outlier": verdicts[k].effect_outlier,
                               "flagged": verdicts[k].flagged} for k in ranked],
            "flagged_clusters": [{**e.to_dict(), "class_name": name(e.class_id),
                                  "detector": chosen[e.class_id].get("detector"),
                                  "outlier": verdicts[e.class_id].outlier,
                                  "effect_outlier": verdicts[e.class_id].effect_outlier,
                                  "confirmation": chosen[e.class_id].get("confirmation"),
                                  "latent_concept": concepts.get(e.class_id)} for e in flagged],
            "verdicts": [{**verdicts[k].to_dict(), "class_name": name(k)} for k in ranked],
            "confirmations": [c["confirmation"] for c in chosen.values() if c.get("confirmation")],
            "flag_rule": {"outlier_z": FLAG_Z, "effect_outlier_z": EFFECT_FLAG_Z, "min_effect": MIN_EFFECT,
                          "score_path_rise": SCORE_PATH_RISE},
            "artifact_suspects": int(artifact_suspect.sum()),
        },
        "mislabel": {"suspects": int(mislabel_suspect.sum()), "evidence": dynamics_info.get("evidence")},
        "faithfulness": _faithfulness(layout),
        "stages": _stage_seconds(ctx.markers, n),
    }
    if config.embedded:  # the embedded dataset carries ground truth
        summary["evaluation"] = _evaluation(ctx, ranked, artifact_suspect, artifact_score, mislabel_score)
    write_json_atomic(layout.summary, summary)
    ctx.markers.mark_stage(STAGE, artifact_suspects=int(artifact_suspect.sum()),
                           mislabel_suspects=int(mislabel_suspect.sum()))
    ctx.log(f"flags: {len(flagged)} Clever-Hans cluster(s), {int(artifact_suspect.sum())} artifact suspects, "
            f"{int(mislabel_suspect.sum())} mislabel suspects")


def _faithfulness(layout) -> dict | None:
    """The explainer check's summary (faithfulness.json) without its per-sample ids, or None when disabled."""
    if not layout.faithfulness.exists():
        return None
    check = json.loads(layout.faithfulness.read_text())
    return {k: v for k, v in check.items() if k != "sample_ids"}


def _evaluation(ctx: AuditContext, ranking, artifact_suspect, artifact_score, mislabel_score) -> dict:
    from unhans.storage import read_table

    from ..evaluation import evaluate

    truth = read_table(ctx.layout.root, "ground_truth").sort_by("sample_id")
    tagged = truth.column("tagged").to_numpy(zero_copy_only=False)
    flipped = truth.column("flipped").to_numpy(zero_copy_only=False)
    planted = [a for a in ctx.config.dataset.artifacts if a.fraction > 0]
    use = _artifact_use(ctx, planted, tagged | flipped) if planted else []
    return evaluate(
        class_ranking=list(ranking), artifact_use=use,
        artifact_classes=[a.class_ for a in planted],
        artifact_suspect=artifact_suspect, artifact_score=artifact_score, tagged=tagged,
        mislabel_score=mislabel_score, flipped=flipped,
    )


def _artifact_use(ctx: AuditContext, planted, excluded) -> list[float]:
    """The trained model's use of each planted artifact (:func:`..evaluation.artifact_use`), on the CPU."""
    import torch

    from ..evaluation import artifact_use
    from ..model_loading import build_model

    model = build_model(ctx.model_spec(), "cpu")

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).argmax(1).numpy()

    images = np.load(ctx.layout.embedded_images, mmap_mode="r")
    labels = np.load(ctx.layout.embedded_labels)
    return artifact_use(predict, images, labels, excluded, planted, seed=ctx.config.dataset.seed)


def _stage_seconds(markers, num_samples: int) -> dict:
    """Wall seconds of the stages before flags (as their markers recorded them), explain samples/s."""
    out = {}
    for name in TIMED_STAGES:
        info = markers.stage_info(name) or {}
        seconds = info.get("seconds")
        out[name] = {"seconds": None if seconds is None else round(float(seconds), 3)}
        if info.get("phases"):  # the spray stage's parts: plan, regroup, classes, confirm, carriers
            out[name]["phases"] = info["phases"]
    explain = out["explain"]["seconds"]
    if explain:
        out["explain"]["samples_per_second"] = round(num_samples / explain, 1)
    return out
