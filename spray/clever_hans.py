"""Clever-Hans evidence per cluster and class, from the explanations alone.

A Clever-Hans strategy (seed 003, VIII-A: a watermark, a copyright tag) makes a group of
samples put much of their relevance into one small, fixed region that the rest of their
class does not use. For every SpRAy cluster we therefore search the window (a square of
``window`` pixels) that maximizes

    contrast = mean_{i∈cluster} share_i(W) − mean_{i∈class∖cluster} share_i(W),

where share_i(W) is the fraction of sample i's positive relevance inside W. Natural
sub-strategies of a class (a crossed 7, a closed 4) differ in relevance spread over the
strokes, so their best single small window gains little; a tag concentrates it. The score
discounts clusters made of likely-mislabeled samples (their memorized explanations also
form small tight clusters): score = contrast × (1 − mean mislabel probability proxy).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class ClusterEvidence:
    class_id: int
    cluster: int
    size: int
    size_fraction: float       # of the class
    window: tuple[int, int, int, int]   # row0, col0, row1, col1 (exclusive) in heatmap pixels
    concentration: float       # members' mean relevance share inside the window
    baseline: float            # the rest of the class's mean share inside the window
    contrast: float
    consistency: float         # fraction of members whose share exceeds the midpoint
    mislabel_fraction: float   # mean of members' mislabel flags (0 without dynamics)
    score: float
    flagged: bool = False

    def to_dict(self) -> dict:
        out = asdict(self)
        out["window"] = list(self.window)
        return out


def relevance_shares(heatmaps: np.ndarray) -> np.ndarray:
    """(N, C, H, W) or (N, H, W) relevance → (N, H, W) positive relevance, each map summing to 1."""
    maps = np.asarray(heatmaps, dtype=np.float64)
    if maps.ndim == 4:
        maps = maps.sum(axis=1)
    pos = np.clip(maps, 0.0, None)
    total = pos.sum(axis=(1, 2), keepdims=True)
    return np.divide(pos, total, out=np.zeros_like(pos), where=total > 0)


def window_sums(maps: np.ndarray, window: int) -> np.ndarray:
    """Sums over every window x window square: (..., H, W) → (..., H-window+1, W-window+1)."""
    c = np.cumsum(np.cumsum(maps, axis=-2), axis=-1)
    c = np.pad(c, [(0, 0)] * (maps.ndim - 2) + [(1, 0), (1, 0)])
    return c[..., window:, window:] - c[..., :-window, window:] - c[..., window:, :-window] + c[..., :-window, :-window]


def cluster_evidence(
    shares: np.ndarray, clusters: np.ndarray, class_id: int, *, window: int,
    mislabel_flags: np.ndarray | None = None, min_size: int = 5,
) -> list[ClusterEvidence]:
    """Evidence for every cluster of one class. shares: (N, H, W) from :func:`relevance_shares`."""
    n = len(shares)
    out = []
    for c in np.unique(clusters):
        members = clusters == c
        size = int(members.sum())
        if size < min_size or size == n:
            # too small to be a strategy, or the whole class (nothing to contrast against)
            out.append(ClusterEvidence(class_id, int(c), size, size / n, (0, 0, 0, 0), 0.0, 0.0, 0.0, 0.0,
                                       0.0, 0.0))
            continue
        inside = window_sums(shares[members].mean(0), window)
        outside = window_sums(shares[~members].mean(0), window)
        diff = inside - outside
        r, col = np.unravel_index(np.argmax(diff), diff.shape)
        member_share = window_sums(shares[members][:, r:r + window, col:col + window], window)[:, 0, 0]
        midpoint = 0.5 * (inside[r, col] + outside[r, col])
        mislabel = float(mislabel_flags[members].mean()) if mislabel_flags is not None else 0.0
        contrast = float(diff[r, col])
        out.append(ClusterEvidence(
            class_id=class_id, cluster=int(c), size=size, size_fraction=size / n,
            window=(int(r), int(col), int(r + window), int(col + window)),
            concentration=float(inside[r, col]), baseline=float(outside[r, col]), contrast=contrast,
            consistency=float((member_share > midpoint).mean()), mislabel_fraction=mislabel,
            score=contrast * (1.0 - mislabel),
        ))
    return out


def sample_window_share(shares: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """Each sample's relevance share inside ``window`` (row0, col0, row1, col1)."""
    r0, c0, r1, c1 = window
    return shares[:, r0:r1, c0:c1].sum(axis=(1, 2))


# A cluster is judged Clever-Hans when its members put at least this much more of their
# relevance into one small window than the rest of their class, most members agree, and
# it is not mostly made of likely-mislabeled samples (those are in the score already).
FLAG_SCORE = 0.2
FLAG_CONSISTENCY = 0.6


def flag_clusters(evidence: list[ClusterEvidence], *, min_score: float = FLAG_SCORE,
                  min_consistency: float = FLAG_CONSISTENCY) -> list[ClusterEvidence]:
    """Mark the clusters judged Clever-Hans (in place) and return them, best first."""
    flagged = []
    for e in evidence:
        e.flagged = bool(e.score >= min_score and e.consistency >= min_consistency)
        if e.flagged:
            flagged.append(e)
    return sorted(flagged, key=lambda e: -e.score)


def rank_classes(evidence: list[ClusterEvidence]) -> list[tuple[int, float]]:
    """(class, Clever-Hans score) best first; a class scores its best cluster."""
    best: dict[int, float] = {}
    for e in evidence:
        best[e.class_id] = max(best.get(e.class_id, float("-inf")), e.score)
    return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
