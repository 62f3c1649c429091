"""Clever-Hans evidence per class, from the explanations and the inputs alone.

A Clever-Hans strategy (seed 003, VIII-A: a watermark, a copyright tag) shows in two
ways at once:

1. *relevance concentration*: a group of samples puts much of its relevance into one
   small region that neither the rest of its class nor the other classes use;
2. *pattern constancy*: inside that region the group's inputs are (nearly) the same
   pattern, while a natural class feature (a stroke, a loop) varies from sample to sample.

For every class, every cluster of the spectral embedding at every resolution k (SpRAy
clusterings for k = 2..max) is a candidate group G. For G we search the square window W
(``window`` pixels) maximizing the relevance evidence

    R(G, W) = log((c + δ) / (b_class + δ)) + log((c + δ) / (b_data + δ)),

with c the mean share of G's positive relevance inside W, b_class the same for the rest of
the class, b_data for the samples of all other classes, δ = 0.01. The pattern spread

    s(G, W) = Σ_p w_p · MAD_{i∈G}(x_ip) / σ_x

is the relevance-weighted (w = G's mean relevance share in W) median absolute deviation of
the inputs over G, relative to the dataset's pixel standard deviation σ_x; medians keep it
robust to a minority of foreign members in G. A constant pattern must also be *there*:
blank background is constant too, so the pattern's distinctiveness

    t(G, W) = Σ_p w_p · |median_{i∈G}(x_ip) − median_dataset(x_p)| / σ_x

measures how far G's median pattern stands from the dataset's median image in W. The score
multiplies the three,

    score = R · exp(-s / 0.05) · (1 - exp(-t / 0.25)) · (1 - mislabel fraction of G),

and the best candidate of a class is its Clever-Hans score. Mislabeled samples also form
small, tight clusters; the last factor keeps them from being taken for artifacts.

The winning group is then refined: the class members whose input in W matches G's median
pattern (relevance-weighted distance below the largest gap in the sorted log-distances)
and whose relevance share in W exceeds b_class form the artifact group. This merges a
strategy that the clustering split over several clusters and drops strays.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

DELTA = 0.01          # smoothing of relevance shares in the log-ratios
SPREAD_SCALE = 0.05   # pattern spread (in units of the pixel std) at which constancy has decayed to 1/e
DISTINCT_SCALE = 0.25  # pattern distinctiveness (pixel std units) at which 63% of the factor is reached
FLAG_SCORE = 1.0      # a class whose best candidate scores at least this is flagged


@dataclass
class ClusterEvidence:
    """The best Clever-Hans candidate of one class and the numbers behind its score."""

    class_id: int
    resolution: int                 # k of the clustering the candidate came from
    cluster: int                    # cluster id within that clustering
    size: int                       # members of the refined group
    size_fraction: float            # of the class
    window: tuple[int, int, int, int]   # row0, col0, row1, col1 (exclusive), heatmap pixels
    concentration: float            # group's mean relevance share inside the window
    baseline: float                 # the rest of the class
    dataset_baseline: float         # all other classes
    relevance_evidence: float       # R above
    pattern_spread: float           # s above
    pattern_distinctiveness: float  # t above
    mislabel_fraction: float
    score: float
    flagged: bool = False
    members: list[int] = field(default_factory=list, repr=False)   # positions within the class

    def to_dict(self, with_members: bool = False) -> dict:
        out = asdict(self)
        out["window"] = list(self.window)
        if not with_members:
            out.pop("members")
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


def sample_window_share(shares: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """Each sample's relevance share inside ``window`` (row0, col0, row1, col1)."""
    r0, c0, r1, c1 = window
    return shares[:, r0:r1, c0:c1].sum(axis=(1, 2))


def _pattern(images: np.ndarray, weights: np.ndarray, window: tuple[int, int, int, int],
             pixel_std: float) -> tuple[np.ndarray, float, np.ndarray]:
    """(median pattern, pattern spread of ``images``, per-image distance to the median)."""
    r0, c0, r1, c1 = window
    patches = images[..., r0:r1, c0:c1]                     # (n, C, w, w)
    median = np.median(patches, axis=0)
    w = weights / max(weights.sum(), 1e-12)                  # (w, w), broadcast over channels
    spread = float((np.median(np.abs(patches - median), axis=0) * w).sum() / patches.shape[1] / pixel_std)
    return median, spread, w


def _distances(images: np.ndarray, median: np.ndarray, w: np.ndarray, window, pixel_std: float) -> np.ndarray:
    r0, c0, r1, c1 = window
    patches = images[..., r0:r1, c0:c1]
    return (np.abs(patches - median) * w).sum(axis=(-1, -2)).mean(axis=-1) / pixel_std


DISTANCE_FLOOR = 0.02  # pattern distances below 2% of the pixel std count as equal


def _largest_log_gap(values: np.ndarray, low: float, high: float) -> float:
    """A cut in the largest gap of sorted log-values between ``low`` and ``high``.

    Values are floored at :data:`DISTANCE_FLOOR` first: near zero, log-gaps between
    practically identical patterns would otherwise be the largest.
    """
    low, high = max(low, DISTANCE_FLOOR), max(high, DISTANCE_FLOOR)
    logs = np.sort(np.log(np.clip(values, DISTANCE_FLOOR, None)))
    inside = logs[(logs >= np.log(low)) & (logs <= np.log(high))]
    if len(inside) < 2:
        return float(np.sqrt(low * high))
    gaps = np.diff(inside)
    i = int(np.argmax(gaps))
    return float(np.exp(0.5 * (inside[i] + inside[i + 1])))


def class_evidence(
    shares: np.ndarray, images: np.ndarray, clusterings: dict[int, np.ndarray], class_id: int, *,
    other_mean_share: np.ndarray, median_image: np.ndarray, pixel_std: float, window: int,
    mislabel_flags: np.ndarray | None = None, min_size: int = 5,
) -> ClusterEvidence | None:
    """The best Clever-Hans candidate of one class, refined (see the module docstring).

    shares: (n, H, W) relevance shares of the class's samples; images: (n, C, H, W) their
    inputs; clusterings: k → (n,) cluster labels; other_mean_share: (H, W) mean share map of
    all samples of other classes; median_image: (C, H, W) the dataset's per-pixel median;
    pixel_std: the dataset's pixel standard deviation.
    Returns None when the class has no candidate group (too few samples).
    """
    n = len(shares)
    if n < 2 * min_size:
        return None
    flags = np.zeros(n) if mislabel_flags is None else np.asarray(mislabel_flags, dtype=np.float64)
    b_data_all = window_sums(other_mean_share, window)
    best = None
    seen: set[bytes] = set()
    for k, labels in sorted(clusterings.items()):
        for c in np.unique(labels):
            members = labels == c
            size = int(members.sum())
            if size < min_size or size > n - min_size or members.tobytes() in seen:
                continue
            seen.add(members.tobytes())
            found = _evidence_for(shares, images, members, b_data_all, median_image, window, pixel_std, flags)
            if best is None or found[0] > best[0]:
                best = (*found, k, int(c))
    if best is None:
        return None
    win, k, c = best[1], best[-2], best[-1]
    members = labels_of(clusterings[k], c)
    refined = _refine(shares, images, members, win, pixel_std)
    if refined.sum() >= min_size and refined.sum() <= n - min_size:
        members = refined
    score, win, conc, b_class, b_data, evidence, spread, distinct = _evidence_for(
        shares, images, members, b_data_all, median_image, window, pixel_std, flags, fixed=win)
    return ClusterEvidence(
        class_id=int(class_id), resolution=int(k), cluster=int(c), size=int(members.sum()),
        size_fraction=float(members.mean()), window=win, concentration=conc, baseline=b_class,
        dataset_baseline=b_data, relevance_evidence=evidence, pattern_spread=spread,
        pattern_distinctiveness=distinct,
        mislabel_fraction=float(flags[members].mean()), score=score,
        members=np.flatnonzero(members).tolist(),
    )


def labels_of(labels: np.ndarray, cluster: int) -> np.ndarray:
    return labels == cluster


def _evidence_for(shares, images, members, b_data_all, median_image, window, pixel_std, flags, fixed=None):
    inside = window_sums(shares[members].mean(0), window)
    outside = window_sums(shares[~members].mean(0), window)
    ratio = np.log((inside + DELTA) / (outside + DELTA)) + np.log((inside + DELTA) / (b_data_all + DELTA))
    if fixed is None:
        r, col = np.unravel_index(np.argmax(ratio), ratio.shape)
        win = (int(r), int(col), int(r + window), int(col + window))
    else:
        win = fixed
        r, col = win[0], win[1]
    weights = shares[members].mean(0)[win[0]:win[2], win[1]:win[3]]
    median, spread, w = _pattern(images[members], weights, win, pixel_std)
    reference = median_image[..., win[0]:win[2], win[1]:win[3]]
    distinct = float((np.abs(median - reference) * w).sum() / median.shape[0] / pixel_std)
    evidence = float(ratio[r, col])
    mislabel = float(flags[members].mean())
    score = (evidence * float(np.exp(-spread / SPREAD_SCALE)) * float(1.0 - np.exp(-distinct / DISTINCT_SCALE))
             * (1.0 - mislabel))
    return (score, win, float(inside[r, col]), float(outside[r, col]), float(b_data_all[r, col]), evidence,
            spread, distinct)


def _refine(shares, images, members, win, pixel_std) -> np.ndarray:
    """Class members carrying the group's pattern in ``win`` with more than baseline relevance there."""
    weights = shares[members].mean(0)[win[0]:win[2], win[1]:win[3]]
    median, _, w = _pattern(images[members], weights, win, pixel_std)
    dist = _distances(images, median, w, win, pixel_std)
    cut = _largest_log_gap(dist, np.median(dist[members]), np.median(dist[~members]))
    matches = dist <= cut
    if matches.all():
        return matches
    share = sample_window_share(shares, win)
    return matches & (share > share[~matches].mean())


def sample_artifact_scores(shares: np.ndarray, images: np.ndarray, evidence: ClusterEvidence,
                           pixel_std: float) -> np.ndarray:
    """A continuous per-sample artifact score within the class of ``evidence``.

    score_i = class score × exp(-d_i / 0.05·...) pattern match × relevance in the window
    relative to the group: match_i = exp(-d_i / (SPREAD_SCALE * 4)), rel_i =
    clip((share_i - b_class) / (c - b_class), 0, 1).
    """
    members = np.zeros(len(shares), bool)
    members[evidence.members] = True
    win = evidence.window
    weights = shares[members].mean(0)[win[0]:win[2], win[1]:win[3]]
    median, _, w = _pattern(images[members], weights, win, pixel_std)
    dist = _distances(images, median, w, win, pixel_std)
    share = sample_window_share(shares, win)
    span = max(evidence.concentration - evidence.baseline, 1e-6)
    rel = np.clip((share - evidence.baseline) / span, 0.0, 1.0)
    return max(evidence.score, 0.0) * np.exp(-dist / (4 * SPREAD_SCALE)) * rel


def flag_classes(evidence: list[ClusterEvidence], *, min_score: float = FLAG_SCORE) -> list[ClusterEvidence]:
    """Mark the candidates judged Clever-Hans (in place) and return them, best first."""
    for e in evidence:
        e.flagged = bool(e.score >= min_score)
    return sorted((e for e in evidence if e.flagged), key=lambda e: -e.score)


def rank_classes(evidence: list[ClusterEvidence], classes: list[int] | None = None) -> list[tuple[int, float]]:
    """(class, Clever-Hans score) best first; classes without a candidate score 0."""
    best = {e.class_id: e.score for e in evidence}
    for k in classes or []:
        best.setdefault(int(k), 0.0)
    return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
