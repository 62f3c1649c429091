"""Scoring the detectors against injected ground truth (only when the dataset has it)."""
from __future__ import annotations

import numpy as np


def precision_at_n(scores: np.ndarray, truth: np.ndarray, n: int | None = None) -> float:
    """Fraction of true items among the n highest scores (n = number of true items by default)."""
    n = int(truth.sum()) if n is None else n
    if n == 0:
        return float("nan")
    top = np.argsort(-scores, kind="stable")[:n]
    return float(truth[top].mean())


def evaluate(*, class_ranking: list[int], artifact_classes: list[int], artifact_suspect: np.ndarray,
             artifact_score: np.ndarray, tagged: np.ndarray, mislabel_score: np.ndarray, flipped: np.ndarray,
             artifact_use: list[float] | None = None) -> dict:
    """The ``evaluation`` object of summary.json; a metric that is undefined is ``None``.

    artifact_class_ranks: rank (1 = top) of each poisoned class in the Clever-Hans ranking
    (``len(ranking) + 1`` when the class was never explained); artifact_class_rank: the worst of
    them (``None`` without an artifact); artifact_precision / artifact_recall: artifact suspects
    vs tagged samples; artifact_score_auroc / artifact_score_ap: the per-sample artifact score
    ranking all samples against the tagged ones (AUROC, average precision);
    mislabel_auroc and mislabel_precision_at_n (n = number of flipped labels); artifact_use: see
    :func:`artifact_use`, one per poisoned class.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    def ratio(num: int, den: int) -> float | None:
        return float(num / den) if den else None

    hits = int((artifact_suspect & tagged).sum())
    ranks = [class_ranking.index(k) + 1 if k in class_ranking else len(class_ranking) + 1 for k in artifact_classes]
    planted = bool(ranks) and tagged.any()
    both = tagged.any() and (~tagged).any()
    has_both = flipped.any() and (~flipped).any()
    return {
        "artifact_class_rank": max(ranks) if planted else None,
        "artifact_class_ranks": ranks if planted else [],
        "artifact_precision": ratio(hits, int(artifact_suspect.sum())),
        "artifact_recall": ratio(hits, int(tagged.sum())),
        "artifact_score_auroc": float(roc_auc_score(tagged, artifact_score)) if both else None,
        "artifact_score_ap": float(average_precision_score(tagged, artifact_score)) if both else None,
        "artifact_use": list(artifact_use or []),
        "mislabel_auroc": float(roc_auc_score(flipped, mislabel_score)) if has_both else None,
        "mislabel_precision_at_n": precision_at_n(mislabel_score, flipped) if flipped.any() else None,
    }


def artifact_use(predict, images: np.ndarray, labels: np.ndarray, excluded: np.ndarray, artifacts, *,
                 recipients: int = 200, seed: int = 0) -> list[float]:
    """How much the model takes each planted shortcut: the artifact planted (as the dataset plants
    it) into ``recipients`` images of other classes, the fraction then predicted as the poisoned
    class minus the fraction before. Near 0: the model ignores the artifact, and no explanation
    of it can show one.

    predict: (B, C, H, W) float32 → predicted classes; images (N, C, H, W); labels (N,);
    excluded (N,) samples never used as recipients (tagged or with flipped labels); artifacts:
    :class:`~unhans.pipeline.config.ArtifactConfig` with a fraction above 0.
    """
    from .defects import plant_artifact

    out = []
    for j, art in enumerate(artifacts):
        rng = np.random.default_rng([seed, j])
        pool = np.flatnonzero((labels != art.class_) & ~excluded)
        chosen = np.sort(rng.choice(pool, size=min(recipients, len(pool)), replace=False))
        clean = np.asarray(images[chosen], dtype=np.float32)
        pasted = clean.copy()
        plant_artifact(pasted, np.full(len(chosen), art.class_), art.class_, 1.0, rng, kind=art.kind,
                       corner=art.corner, edge=art.edge)
        before = float((predict(clean) == art.class_).mean())
        out.append(float((predict(pasted) == art.class_).mean()) - before)
    return out
