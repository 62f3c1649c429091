"""Clever-Hans candidates of any shape: where a group's relevance goes and nobody else's does.

:mod:`.clever_hans` and :mod:`.recurring_patterns` look for a *pixel pattern* that a group
shares (a square window, constant to the pixel). A shortcut need not be one: a one-pixel line
along an edge, sparse dots, a frame, a texture over the background, a blurred or noised patch,
a burst in one feature of a series. What every shortcut the model uses does have is a place in
the *explanations*: the group's relevance goes where its class-mates' and the other classes'
relevance does not (SpRAy's premise, seed 003 and Lapuschkin et al. 2019). Here the candidate
region is a mask of any shape read off the relevance itself:

For every group G (each SpRAy cluster at every resolution k), with m_G, m_R and m_O the mean
relevance-share maps (each map's positive relevance summing to 1) of G, of the rest of the
class and of the other classes, the region of a half A of G is

    M_A = { p : m_A(p) ≥ 2 · max(m_R(p), m_O(p))  and  m_A(p) ≥ 1 / P },

(P pixels: a pixel counts only where A's relevance is at least the uniform share), and it is
judged on the *other* half B, which did not choose it (cross-fitting: a small group's noisy mean
always exceeds the baselines somewhere):

    c = Σ_{M_A} m_B,  b_R = Σ_{M_A} m_R,  b_O = Σ_{M_A} m_O,
    R = log((c + δ) / (b_R + δ)) + log((c + δ) / (b_O + δ)),      δ = 0.01,

averaged with the roles of A and B swapped. With s_i = Σ_{M} share_i each sample's share in the
group's region, a = AUROC(s over B vs the rest of the class, region chosen on A) measures how
cleanly the region separates the group from its class-mates, and

    score = R · (2a − 1)₊ · min(1, f / 0.1),

f the group's fraction of its class. The best group is then refined: the class members whose
share in the region chosen on the whole group lies above the largest log-gap between the
group's and the rest's shares (as in :mod:`.clever_hans`) become the members (this merges a
strategy SpRAy split over several clusters). The score stays the SpRAy group's: a group chosen by
its share in the region would score itself up (on a plain class, a random split refined this
way scored like a planted line).

The score says *where*, not *whether*: a sub-style of a class (a 7 with a crossbar) also puts
its relevance where its class-mates do not. Whether the region is a shortcut is decided by
the verdict (:mod:`.verdict`): the class must stand out among classes and pasting the region
from members into other classes' inputs must raise p(class) (:func:`.counterfactual.confirm_region`).
Maps larger than :data:`GRID` a side are block-summed to at most that size first (a region is
a set of blocks); the mask is reported on that grid with its block size.
"""
from __future__ import annotations

import numpy as np

from .clever_hans import DELTA, SIZE_FRACTION, ClusterEvidence, _largest_log_gap
from .recurring_patterns import downsample

RATIO = 2.0   # a region pixel draws at least this multiple of the class-mates' and the other classes' share
GRID = 64     # maps are block-summed to at most this many pixels a side


def block_factor(height: int, width: int) -> int:
    """The integer block size that brings (height, width) to at most :data:`GRID` a side."""
    return max(1, -(-max(height, width) // GRID))


def block_sums(maps: np.ndarray, factor: int) -> np.ndarray:
    """(..., H, W) → (..., ceil(H/f), ceil(W/f)) block sums (zero padding at the far edges)."""
    return maps if factor == 1 else downsample(maps, factor) * factor ** 2


def region_mask(group_mean: np.ndarray, rest_mean: np.ndarray, other_mean: np.ndarray) -> np.ndarray:
    """M above: where the group's mean share is at least :data:`RATIO` times both baselines and the uniform share."""
    floor = 1.0 / group_mean.size
    return (group_mean >= RATIO * np.maximum(rest_mean, other_mean)) & (group_mean >= floor)


def _auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive's value > a negative's), ties counting half (the Mann-Whitney statistic)."""
    if not len(positive) or not len(negative):
        return 0.5
    values = np.concatenate([positive, negative])
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_values, return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    u = ranks[:len(positive)].sum() - len(positive) * (len(positive) + 1) / 2.0
    return float(u / (len(positive) * len(negative)))


class _ClassRegions:
    """One class's share maps on the search grid, with the sums that every group's score needs."""

    def __init__(self, shares: np.ndarray, other_mean_share: np.ndarray):
        self.factor = block_factor(*shares.shape[-2:])
        self.shares = block_sums(np.asarray(shares, np.float64), self.factor)           # (n, h, w)
        self.other = block_sums(np.asarray(other_mean_share, np.float64), self.factor)  # (h, w)
        self.total = self.shares.sum(0)
        self.flat = self.shares.reshape(len(self.shares), -1)

    def rest_mean(self, members: np.ndarray) -> np.ndarray:
        rest = len(members) - int(members.sum())
        return (self.total - self.shares[members].sum(0)) / max(rest, 1)

    def score(self, members: np.ndarray) -> dict:
        """Cross-fitted evidence of a group (module docstring): score, R, c, b_R, b_O, separation."""
        rows = np.flatnonzero(members)
        halves = (rows[0::2], rows[1::2])
        rest_mean = self.rest_mean(members)
        rest_rows = np.flatnonzero(~members)
        parts = []
        for chooser, judge in (halves, halves[::-1]):
            mask = region_mask(self.shares[chooser].mean(0), rest_mean, self.other).ravel()
            c = float(self.flat[judge][:, mask].sum(1).mean()) if mask.any() else 0.0
            b_rest, b_other = float(rest_mean.ravel()[mask].sum()), float(self.other.ravel()[mask].sum())
            auroc = _auroc(self.flat[judge][:, mask].sum(1), self.flat[rest_rows][:, mask].sum(1)) if mask.any() else 0.5
            parts.append((c, b_rest, b_other, auroc))
        c, b_rest, b_other, auroc = (float(np.mean(v)) for v in zip(*parts))
        evidence = float(np.log((c + DELTA) / (b_rest + DELTA)) + np.log((c + DELTA) / (b_other + DELTA)))
        separation = max(0.0, 2.0 * auroc - 1.0)
        size = min(1.0, float(members.mean()) / SIZE_FRACTION)
        return {"score": max(evidence, 0.0) * separation * size, "evidence": evidence, "c": c, "b_rest": b_rest,
                "b_other": b_other, "separation": separation}

    def refine(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        """(refined members, the region chosen on the whole group, the share cut, every sample's share in it)."""
        mask = region_mask(self.shares[members].mean(0), self.rest_mean(members), self.other)
        share = self.flat[:, mask.ravel()].sum(1)
        if not mask.any():
            return members, mask, 0.0, share
        floor = 1e-4
        cut = _largest_log_gap(np.maximum(share, floor), max(float(np.median(share[~members])), floor),
                               max(float(np.median(share[members])), floor))
        return share > cut, mask, cut, share


def region_evidence(
    shares: np.ndarray, clusterings: dict[int, np.ndarray], class_id: int, *, other_mean_share: np.ndarray,
    mislabel_flags: np.ndarray | None = None, min_size: int = 5, count: int = 1,
) -> list[tuple[ClusterEvidence, np.ndarray]]:
    """The best region candidates of one class, each with every class sample's artifact score against it.

    shares: (n, H, W) relevance shares of the class's samples (:func:`.clever_hans.relevance_shares`);
    clusterings: k → (n,) SpRAy cluster labels; other_mean_share: (H, W) the other classes' mean
    share map. Returns up to ``count`` (candidate, per-sample scores (n,): score · clip((s_i − b_R) /
    (c − b_R), 0, 1)) pairs, best score first, each group overlapping the ones before by less than
    half (Jaccard): where a class splits in two, both halves are candidates, and which one is the
    shortcut is for the counterfactual to say (when the tagged samples show another class's content,
    the clean majority's region is where the tagged ones do not look, too). Empty when the class has
    no group of ``min_size`` to n − ``min_size`` samples.
    """
    n = len(shares)
    if n < 2 * min_size:
        return []
    flags = np.zeros(n) if mislabel_flags is None else np.asarray(mislabel_flags, np.float64)
    regions = _ClassRegions(shares, other_mean_share)
    found, seen = [], set()
    for k, labels in sorted(clusterings.items()):
        for c in np.unique(labels):
            members = labels == c
            if not min_size <= members.sum() <= n - min_size or members.tobytes() in seen:
                continue
            seen.add(members.tobytes())
            found.append((regions.score(members), members, int(k), int(c)))
    chosen: list[tuple] = []
    for item in sorted(found, key=lambda item: -item[0]["score"]):
        if len(chosen) == count:
            break
        if all(_jaccard(item[1], other[1]) < 0.5 for other in chosen):
            chosen.append(item)
    return [_candidate(regions, *item, class_id, flags, min_size) for item in chosen]


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _candidate(regions: _ClassRegions, found: dict, members: np.ndarray, k: int, c: int, class_id: int,
               flags: np.ndarray, min_size: int) -> tuple[ClusterEvidence, np.ndarray]:
    """A scored SpRAy group as a candidate: members refined, region, per-sample scores."""
    n = len(members)
    refined, mask, cut, share = regions.refine(members)
    if min_size <= refined.sum() <= n - min_size:  # the score stays the SpRAy group's: the refined group was
        members = refined                           # chosen by its share in the region, so would score itself up
        mask = region_mask(regions.shares[members].mean(0), regions.rest_mean(members), regions.other)
        share = regions.flat[:, mask.ravel()].sum(1)
    carriers = share > cut if mask.any() else members
    span = max(found["c"] - found["b_rest"], 1e-6)
    scores = max(found["score"], 0.0) * np.clip((share - found["b_rest"]) / span, 0.0, 1.0)
    f = regions.factor
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    window = ((int(rows[0]) * f, int(cols[0]) * f, int(rows[-1] + 1) * f, int(cols[-1] + 1) * f) if mask.any()
              else (0, 0, 0, 0))
    evidence = ClusterEvidence(
        class_id=int(class_id), resolution=k, cluster=c, size=int(members.sum()), size_fraction=float(members.mean()),
        window=window, concentration=found["c"], baseline=found["b_rest"], dataset_baseline=found["b_other"],
        relevance_evidence=found["evidence"], pattern_constancy=0.0, pattern_distinctiveness=0.0,
        mislabel_fraction=float(flags[members].mean()), score=float(found["score"]), pattern_cut=float(cut),
        members=np.flatnonzero(members).tolist(), carriers=np.flatnonzero(carriers | members).tolist(),
        pattern_weights=mask.astype(np.uint8).tolist(), placement="region", search_factor=f,
        separation=found["separation"],
    )
    return evidence, scores


def region_pixels(evidence: ClusterEvidence, height: int, width: int, dilate: int = 1) -> np.ndarray:
    """The candidate's region as a (height, width) bool mask on the input's own pixels, grown by ``dilate``
    pixels (a thin line's relevance may sit beside it: pasting a little background around it is harmless,
    the control pastes the same pixels)."""
    f = max(1, int(evidence.search_factor))
    mask = np.asarray(evidence.pattern_weights, bool)
    mask = np.repeat(np.repeat(mask, f, axis=0), f, axis=1)[:height, :width]
    for _ in range(dilate):
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        mask = grown
    return mask
