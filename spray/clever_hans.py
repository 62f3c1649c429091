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
the class, b_data for the samples of all other classes, δ = 0.01. Inside W, with
w_p = G's mean relevance share at pixel p (normalized over W) and σ_x the dataset's pixel
standard deviation, each pixel's constancy over G is

    κ_p = exp(-MAD_{i∈G}(x_ip) / (0.05 σ_x))

(median absolute deviation: robust to a minority of foreign members in G), and

    K(G, W) = Σ_p w_p κ_p                                   (pattern constancy, in [0, 1])
    t(G, W) = Σ_p w_p κ_p |median_G(x_p) − median_rest(x_p)| / (σ_x K)   (distinctiveness)

where median_rest is over the rest of the class: blank background is constant too, and a
sub-style of a class (a 6 with no ink at the top) is constant where its class-mates also
are; neither stands out from the rest of the class. The score multiplies the evidence,

    score = R · K · (1 - exp(-t / 1.0)) · min(1, f / 0.1) · (1 - mislabel fraction of G),

with f the group's fraction of its class, and the best candidate of a class is its
Clever-Hans score. Saturated ink is constant too, so a common stroke of a sub-style can
reach a moderate K; it stands out less from the rest of its class (t) and draws less
relevance (R) than a stamped pattern. Tiny groups (a handful of odd samples) are
down-weighted by f. Mislabeled samples also form small, tight clusters; the last factor
keeps them from being taken for artifacts.

The winning group is then refined: the class members whose input on the constant pixels
of W matches G's median pattern (distance below the largest gap in the sorted
log-distances) and whose relevance share in W exceeds that of the non-matching samples
form the group that is scored. This merges a strategy that the clustering split over
several clusters and drops strays. The *carriers* are all samples whose input carries the
pattern, whether or not the model leaned on it for that sample: when the class is flagged,
they are the artifact suspects (the samples to clean), in its class and, found by
:func:`pattern_carriers`, in other classes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

DELTA = 0.01          # smoothing of relevance shares in the log-ratios
SPREAD_SCALE = 0.05   # per-pixel MAD (in units of the pixel std) at which constancy has decayed to 1/e
DISTINCT_SCALE = 1.0  # distinctiveness (pixel-std units) at which 63% of its factor is reached
SIZE_FRACTION = 0.1   # groups smaller than this fraction of their class are down-weighted in proportion
FLAG_SCORE = 1.0      # a class whose best candidate scores at least this is flagged
DISTANCE_FLOOR = 0.02  # pattern distances below 2% of the pixel std count as equal


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
    pattern_constancy: float        # K above
    pattern_distinctiveness: float  # t above
    mislabel_fraction: float
    score: float
    pattern_cut: float = 0.0        # distance to the pattern below which an input carries it
    flagged: bool = False
    members: list[int] = field(default_factory=list, repr=False)   # positions within the class (sample ids once stored)
    carriers: list[int] = field(default_factory=list, repr=False)  # class samples whose input carries the pattern
    other_members: list[int] = field(default_factory=list, repr=False)  # carriers predicted as other classes
    pattern: list = field(default_factory=list, repr=False)         # median input (C, w, w) in the window
    pattern_weights: list = field(default_factory=list, repr=False)  # constancy-weighted relevance (w, w)
    placement: str = "fixed"        # fixed: the pattern sits in ``window``; recurring: anywhere (see .recurring_patterns)
    search_factor: int = 1          # recurring: inputs were area-averaged by this factor for the search
    other_rate: float = 0.0         # recurring: fraction of other classes' reference inputs carrying the pattern
    separation: float = 0.0         # recurring: log10 gap between members' and the rest's distances to it, in [0, 1]
    positions: list = field(default_factory=list, repr=False)  # recurring: each member's pattern position (row, col)

    _PER_SAMPLE = ("members", "carriers", "other_members", "pattern", "pattern_weights", "positions")

    def to_dict(self, with_members: bool = False) -> dict:
        out = asdict(self)
        out["window"] = list(self.window)
        if not with_members:
            for key in self._PER_SAMPLE:
                out.pop(key)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ClusterEvidence":
        """The inverse of ``to_dict(with_members=True)``; what the stages add (``confirmation``,
        ``detector``, ``other_scores``) is left out."""
        from dataclasses import fields

        known = {f.name for f in fields(cls)} - {"window"}
        return cls(**{k: v for k, v in data.items() if k in known}, window=tuple(data["window"]))


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
             pixel_std: float) -> tuple[np.ndarray, np.ndarray]:
    """(median pattern (C, w, w), constancy-weighted pixel weights (w, w) summing to K)."""
    r0, c0, r1, c1 = window
    patches = images[..., r0:r1, c0:c1]                     # (n, C, w, w)
    median = np.median(patches, axis=0)
    mad = np.median(np.abs(patches - median), axis=0).mean(axis=0) / pixel_std
    w = weights / max(weights.sum(), 1e-12)
    return median, w * np.exp(-mad / SPREAD_SCALE)


def _distances(images: np.ndarray, median: np.ndarray, wk: np.ndarray, window, pixel_std: float) -> np.ndarray:
    """Each image's distance to ``median`` on the constant pixels (weights ``wk``), pixel-std units."""
    r0, c0, r1, c1 = window
    patches = images[..., r0:r1, c0:c1]
    norm = max(wk.sum(), 1e-12)
    return (np.abs(patches - median).mean(axis=-3) * wk).sum(axis=(-1, -2)) / norm / pixel_std


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
    other_mean_share: np.ndarray, pixel_std: float, window: int,
    mislabel_flags: np.ndarray | None = None, min_size: int = 5,
) -> ClusterEvidence | None:
    """The best Clever-Hans candidate of one class, refined (see the module docstring).

    shares: (n, H, W) relevance shares of the class's samples; images: (n, C, H, W) their
    inputs; clusterings: k → (n,) cluster labels; other_mean_share: (H, W) mean share map of
    all samples of other classes; pixel_std: the dataset's pixel standard deviation.
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
            found = _evidence_for(shares, images, members, b_data_all, window, pixel_std, flags)
            if best is None or found[0] > best[0]:
                best = (*found, k, int(c))
    if best is None:
        return None
    win, k, c = best[1], best[-2], best[-1]
    members = labels_of(clusterings[k], c)
    refined, cut, matches = _refine(shares, images, members, win, pixel_std)
    if refined.sum() >= min_size and refined.sum() <= n - min_size:
        members = refined
    score, win, conc, b_class, b_data, evidence, constancy, distinct = _evidence_for(
        shares, images, members, b_data_all, window, pixel_std, flags, fixed=win)
    weights = shares[members].mean(0)[win[0]:win[2], win[1]:win[3]]
    median, wk = _pattern(images[members], weights, win, pixel_std)
    return ClusterEvidence(
        pattern_cut=cut, pattern=median.tolist(), pattern_weights=wk.tolist(),
        class_id=int(class_id), resolution=int(k), cluster=int(c), size=int(members.sum()),
        size_fraction=float(members.mean()), window=win, concentration=conc, baseline=b_class,
        dataset_baseline=b_data, relevance_evidence=evidence, pattern_constancy=constancy,
        pattern_distinctiveness=distinct,
        mislabel_fraction=float(flags[members].mean()), score=score,
        members=np.flatnonzero(members).tolist(), carriers=np.flatnonzero(matches | members).tolist(),
    )


def labels_of(labels: np.ndarray, cluster: int) -> np.ndarray:
    return labels == cluster


def _evidence_for(shares, images, members, b_data_all, window, pixel_std, flags, fixed=None):
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
    median, wk = _pattern(images[members], weights, win, pixel_std)
    constancy = float(wk.sum())
    rest = np.median(images[~members][..., win[0]:win[2], win[1]:win[3]], axis=0)
    distinct = float((np.abs(median - rest).mean(axis=0) * wk).sum() / max(constancy, 1e-12) / pixel_std)
    evidence = float(ratio[r, col])
    mislabel = float(flags[members].mean())
    size = min(1.0, float(members.mean()) / SIZE_FRACTION)
    score = evidence * constancy * float(1.0 - np.exp(-distinct / DISTINCT_SCALE)) * size * (1.0 - mislabel)
    return (score, win, float(inside[r, col]), float(outside[r, col]), float(b_data_all[r, col]), evidence,
            constancy, distinct)


def _refine(shares, images, members, win, pixel_std) -> tuple[np.ndarray, float, np.ndarray]:
    """(class members carrying the group's pattern in ``win`` with more than baseline relevance there,
    the distance cut that decides "carrying", all class members carrying the pattern)."""
    weights = shares[members].mean(0)[win[0]:win[2], win[1]:win[3]]
    median, wk = _pattern(images[members], weights, win, pixel_std)
    dist = _distances(images, median, wk, win, pixel_std)
    cut = _largest_log_gap(dist, np.median(dist[members]), np.median(dist[~members]))
    matches = dist <= cut
    if matches.all():
        return matches, cut, matches
    share = sample_window_share(shares, win)
    return matches & (share > share[~matches].mean()), cut, matches


def pattern_carriers(images: np.ndarray, evidence: ClusterEvidence, pixel_std: float,
                     shares: np.ndarray | None = None) -> np.ndarray:
    """Samples whose input carries the candidate's pattern (distance below its cut); with
    ``shares``, only those whose relevance share in the window also exceeds the candidate's
    class baseline (the model relies on the pattern for them too)."""
    win = evidence.window
    median = np.asarray(evidence.pattern, dtype=np.float64)
    wk = np.asarray(evidence.pattern_weights, dtype=np.float64)
    carries = _distances(images, median, wk, win, pixel_std) <= evidence.pattern_cut
    if shares is not None:
        carries &= sample_window_share(shares, win) > evidence.baseline
    return carries


def sample_artifact_scores(shares: np.ndarray, images: np.ndarray, evidence: ClusterEvidence,
                           pixel_std: float) -> np.ndarray:
    """A continuous per-sample artifact score within the class of ``evidence``.

    score_i = class score · match_i · rel_i, with match_i = exp(-d_i / (4 · 0.05)) the
    agreement of sample i's input with the group's pattern on its constant pixels (d_i in
    pixel-std units) and rel_i = clip((share_i - b_class) / (c - b_class), 0, 1) its
    relevance in the window relative to the group's.
    """
    members = np.zeros(len(shares), bool)
    members[evidence.members] = True
    win = evidence.window
    dist = _distances(images, np.asarray(evidence.pattern), np.asarray(evidence.pattern_weights), win, pixel_std)
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
