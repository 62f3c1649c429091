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


def evaluate(*, class_ranking: list[int], artifact_class: int | None, artifact_suspect: np.ndarray,
             tagged: np.ndarray, mislabel_score: np.ndarray, flipped: np.ndarray) -> dict:
    """The ``evaluation`` object of summary.json; a metric that is undefined is ``None``.

    artifact_class_rank: rank (1 = top) of the poisoned class in the Clever-Hans ranking
    (``None`` without an artifact, or ``len(ranking) + 1`` when the class was never explained);
    artifact_precision / artifact_recall: artifact suspects vs tagged samples;
    mislabel_auroc and mislabel_precision_at_n (n = number of flipped labels).
    """
    from sklearn.metrics import roc_auc_score

    def ratio(num: int, den: int) -> float | None:
        return float(num / den) if den else None

    hits = int((artifact_suspect & tagged).sum())
    if artifact_class is None or not tagged.any():
        rank = None
    else:
        rank = class_ranking.index(artifact_class) + 1 if artifact_class in class_ranking else len(class_ranking) + 1
    has_both = flipped.any() and (~flipped).any()
    return {
        "artifact_class_rank": rank,
        "artifact_precision": ratio(hits, int(artifact_suspect.sum())),
        "artifact_recall": ratio(hits, int(tagged.sum())),
        "mislabel_auroc": float(roc_auc_score(flipped, mislabel_score)) if has_both else None,
        "mislabel_precision_at_n": precision_at_n(mislabel_score, flipped) if flipped.any() else None,
    }
