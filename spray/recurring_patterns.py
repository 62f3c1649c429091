"""Clever-Hans evidence for a pattern that does not sit still: found wherever it is in each image.

:mod:`.clever_hans` scores a group's relevance in one fixed window, so a watermark that moves
from image to image spreads over many windows and no group stands out. Here the search is over
the *pattern*, not the place:

1. **seeds**: in every sample of the class, the window (``window`` pixels) where its relevance
   share most exceeds the class's mean share map there (where this sample's explanation looks
   and its class-mates' do not), and the window where it most exceeds the other classes' mean
   share map; the samples with the largest excesses give seeds, and so do the windows with the
   most exact copies elsewhere in the class (a pasted pattern whose relevance is modest in every
   sample still stands out by its copies);
2. **alignment**: a seed's input patch is matched against every class member at every position
   (the weighted root-mean-square difference, in units of the pixel std σ_x; the position of the
   best match aligns that member). Its nearest members' aligned patches give per-pixel constancy
   κ_p = exp(-MAD_p / (0.05 σ_x)); the pixels the group shares weigh, the rest does not;
3. **group**: the members whose weighted distance falls below the largest gap of the sorted
   log-distances (as in :mod:`.clever_hans`), re-aligned and re-weighted once on the group;
4. **score**, as in :mod:`.clever_hans`, with every quantity taken at each member's own position (of the
   places where the member carries the pattern, the one where its relevance evidence is largest: a
   tag has one such place, a texture many, and the model need not use the copy that matched first):

       R = log((c + δ) / (b_class + δ)) + log((c + δ) / (b_data + δ))

   c: the group's mean relevance share in its aligned windows; b_class: the rest of the class's
   mean share at the same positions; b_data: the other classes' at the same positions. K: the
   relevance-weighted constancy of the aligned pattern; t: how far it stands (κ-weighted, in σ_x)
   from what the rest of the class has at those positions. The pattern must also be the
   class's: with e the fraction of a reference sample of other-class inputs that carries it,

       score = R · K · (1 − exp(−t)) · min(1, f / 0.1) · (1 − mislabel fraction) · f / (f + e) · s / 0.5,

   with s the separation: log10 of the gap between the rest's and the members' distances to the
   pattern (10% and 90% quantiles; members' floored at 0.005 σ_x), over 2 decades, in [0, 1].
   Pasted copies sit at distance 0 with the rest far off; a shared stroke is a continuum. The
   0.5 puts the flag threshold at 1.0, as for :mod:`.clever_hans`; on the embedded digits no
   control class went above 0.64 (five seeds) and every shortcut found scored 1.8 or more.

A stroke that many writers share is neither constant to the pixel nor absent from other classes;
a pasted tag is both, wherever it sits. Large inputs are searched on a grid of at most
:data:`SEARCH_SIZE` pixels a side (area-averaged); positions and windows are reported on the
input's own pixels.
"""
from __future__ import annotations

import numpy as np

from .clever_hans import DELTA, DISTINCT_SCALE, SIZE_FRACTION, SPREAD_SCALE, ClusterEvidence, _largest_log_gap

SEARCH_SIZE = 64    # inputs larger than this are area-averaged to at most this many pixels a side
SEEDS = 24          # seeds per class (samples with the largest relevance excess)
NEIGHBOURS = 6      # a seed's nearest members that decide which pixels it shares
MATCH_SCALE = 4 * SPREAD_SCALE  # distance (σ_x) at which a sample's match has decayed to 1/e
CONTRAST_FLOOR = 0.5  # σ_x: a pixel closer than this to what the rest of the class has there is not the pattern
EXACT_FLOOR = 0.005   # σ_x: members' distances below this count as exact copies
SEPARATION_DECADES = 2.0  # the gap (rest / members, 90% quantiles) at which separation reaches 1: 100x
SCORE_UNIT = 0.5     # the product above at which a class is flagged (so both detectors flag at score 1.0)
MAX_SEARCH = 512     # a larger class is searched on an evenly spaced subset of this size
COPY_DISTANCE = 0.1  # σ_x: a window this close to a seed (on its distinct pixels) is a copy of it
CHUNK = 256         # images per block matched at once (bounds the (n, S, P, Q) distance maps)
COPY_SEEDS = 64     # candidate windows whose copies are counted (of two per sample)


def search_factor(height: int, width: int) -> int:
    """The integer factor inputs are area-averaged by before the search."""
    return max(1, -(-max(height, width) // SEARCH_SIZE))


def downsample(maps: np.ndarray, factor: int) -> np.ndarray:
    """(..., H, W) → (..., ceil(H/f), ceil(W/f)) block means (zero padding at the far edges)."""
    if factor == 1:
        return maps
    h, w = maps.shape[-2:]
    ph, pw = -h % factor, -w % factor
    padded = np.pad(maps, [(0, 0)] * (maps.ndim - 2) + [(0, ph), (0, pw)])
    shape = padded.shape[:-2] + (padded.shape[-2] // factor, factor, padded.shape[-1] // factor, factor)
    return padded.reshape(shape).mean(axis=(-3, -1))


def match(images: np.ndarray, patterns: np.ndarray, weights: np.ndarray,
          pixel_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Best match of each pattern in each image, anywhere.

    images (n, C, H, W); patterns (S, C, h, w); weights (S, h, w), each summing to > 0.
    Returns (distance (S, n): weighted RMS difference at the best position in σ_x units,
    position (S, n, 2): its top-left row and column).
    """
    h, w = patterns.shape[-2:]
    found = [PatternMatcher(images[start:start + CHUNK], h, w).match(patterns, weights, pixel_std)
             for start in range(0, len(images), CHUNK)]  # a block of images at a time
    return np.concatenate([d for d, _ in found], axis=1), np.concatenate([p for _, p in found], axis=1)


class PatternMatcher:
    """A set of (padded) images against which h x w patterns are matched at every position, many times.

    The weighted squared difference of a pattern p (weights w, summing to 1) from the window at each
    position is Σ w x² − 2 Σ w p x + Σ w p²: two correlations of the images (x² and x) with the
    pattern's kernels, which one convolution computes for all patterns at once, without copying
    every window out (a copy of every window costs C·h·w times the images' memory, and the time
    to build it)."""

    def __init__(self, images: np.ndarray, h: int, w: int):
        import torch

        x = torch.from_numpy(np.ascontiguousarray(images, np.float32))
        self.stacked = torch.cat([x * x, x], dim=1)                      # (n, 2C, H, W)
        self.n, self.channels = len(x), x.shape[1]
        self.h, self.w = h, w
        self.p, self.q = x.shape[-2] - h + 1, x.shape[-1] - w + 1        # window positions per column, per row

    def match(self, patterns: np.ndarray, weights: np.ndarray, pixel_std: float) -> tuple[np.ndarray, np.ndarray]:
        """As :func:`match`, for the matcher's images."""
        maps = self.distance_maps(patterns, weights, pixel_std)            # (n, P*Q, S)
        best = maps.argmin(1)                                              # (n, S)
        dist = np.take_along_axis(maps, best[:, None, :], 1)[:, 0].T       # (S, n)
        pos = np.stack([best // self.q, best % self.q], axis=-1).transpose(1, 0, 2)
        return dist, pos

    def distance_maps(self, patterns: np.ndarray, weights: np.ndarray, pixel_std: float,
                      rows: np.ndarray | None = None) -> np.ndarray:
        """(n, P*Q, S): each pattern's weighted RMS difference (σ_x) from every window of the images
        (of ``rows`` of them only, when given)."""
        import torch
        import torch.nn.functional as F

        h, w = self.h, self.w
        if patterns.shape[-2:] != (h, w):
            raise ValueError(f"patterns of {patterns.shape[-2:]} pixels matched against {h}x{w} windows")
        wts, pats, const = _prepared(patterns, weights)
        kernels = torch.from_numpy(np.concatenate([wts, -2.0 * wts * pats], axis=1)
                                   .reshape(len(patterns), 2 * self.channels, h, w))
        stacked = self.stacked if rows is None else self.stacked[torch.from_numpy(np.asarray(rows))]
        with torch.no_grad():
            sq = F.conv2d(stacked, kernels) + torch.from_numpy(const)[None, :, None, None]  # (n, S, P, Q)
        sq = sq.numpy().reshape(len(stacked), len(patterns), -1).transpose(0, 2, 1)
        return np.sqrt(np.clip(sq, 0, None)) / pixel_std


def _prepared(patterns, weights):
    """Per pattern: weights broadcast over channels and normalised to sum 1, the pattern, Σ w p² (all flat)."""
    s = len(patterns)
    wts = np.broadcast_to(weights[:, None], patterns.shape).reshape(s, -1).astype(np.float32)
    wts = wts / np.maximum(wts.sum(1, keepdims=True), 1e-12)
    pats = patterns.reshape(s, -1).astype(np.float32)
    return wts, pats, (wts * pats ** 2).sum(1)


def aligned(maps: np.ndarray, positions: np.ndarray, h: int, w: int) -> np.ndarray:
    """The (..., h, w) windows of ``maps`` (n, ..., H, W) at each sample's (row, col)."""
    return np.stack([m[..., r:r + h, c:c + w] for m, (r, c) in zip(maps, positions)])


def _constancy(patches: np.ndarray, pixel_std: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(median pattern (C, h, w), per-pixel constancy κ (h, w), strict constancy (h, w)) of aligned
    patches (n, C, h, w). κ decays with the median absolute deviation (constant in half the group);
    the strict one with the deviation's 90% quantile (constant in nine of ten members)."""
    median = np.median(patches, axis=0)
    deviation = np.abs(patches - median)
    mad = np.median(deviation, axis=0).mean(axis=0) / pixel_std
    q90 = np.quantile(deviation, 0.9, axis=0).mean(axis=0) / pixel_std
    return median, np.exp(-mad / SPREAD_SCALE), np.exp(-q90 / SPREAD_SCALE)


def _sharp(kappa: np.ndarray) -> np.ndarray:
    """Constancy as a pixel weight: pixels less than half constant (κ < 0.5) do not count."""
    return np.where(kappa >= 0.5, kappa, 0.0)


def _best_windows(shares: np.ndarray, baselines: list[np.ndarray], window: int) -> list[tuple]:
    """Per baseline map (H, W): each sample's largest windowed excess of its shares over it, that
    window's flat index, and the number of window columns.

    Against the class's own mean a pattern that half the class carries at one place hardly
    stands out (it is half of that mean); against the other classes' mean it does. A pattern
    at many places is the reverse: it barely raises the class's mean anywhere."""
    from .clever_hans import window_sums

    out = []
    for baseline in baselines:
        excess = window_sums(shares - baseline, window)                 # (n, P, Q)
        flat = excess.reshape(len(shares), -1)
        best = flat.argmax(1)
        out.append((flat[np.arange(len(shares)), best], best, excess.shape[-1]))
    return out


def _seeds(best_windows: list[tuple], count: int) -> list[tuple[int, int, int]]:
    """(sample, row, col) of the windows with the largest excesses (:func:`_best_windows`), ``count``
    split between the baselines, without repeating a sample."""
    chosen: list[tuple[int, int, int]] = []
    seen: set[int] = set()
    per = -(-count // len(best_windows))
    for value, best, q in best_windows:
        taken = 0
        for i in np.argsort(-value, kind="stable"):
            if taken == per:
                break
            if int(i) not in seen:
                seen.add(int(i))
                chosen.append((int(i), int(best[i] // q), int(best[i] % q)))
                taken += 1
    return chosen


SCREEN_QUANTILE = 0.9  # recurring_screen: the class's statistic is this quantile over its samples


def recurring_screen(shares: np.ndarray, other_mean_share: np.ndarray, window: int) -> float:
    """How much a class's relevance concentrates where the other classes' does not: over the class's
    samples, the :data:`SCREEN_QUANTILE` quantile of each sample's largest windowed excess of its
    relevance share over the other classes' mean share (on the search grid). A pasted pattern the
    model uses draws a large share of its carriers' relevance into one window, wherever it sits.

    Cheap (window sums only), so an audit of many classes runs the search (seconds per class) only
    on the classes where this is largest: on ``benchmarks/audit_scale.py`` at 100 classes the five
    planted tags rank 1-5 by it (0.76-0.84, next 0.65, median 0.29). Patterns that the model uses
    only a little (copies with modest relevance, which the search still finds among its seeds) do
    not stand out here; a class with no more than the configured number of classes is always searched."""
    n = len(shares)
    if n == 0:
        return 0.0
    f = search_factor(*shares.shape[-2:])
    grid = downsample(np.asarray(shares, np.float32), f) * f ** 2
    other = downsample(np.asarray(other_mean_share, np.float32), f) * f ** 2
    excess = _best_windows(grid, [other], max(2, window // f))[0][0]
    return float(np.quantile(excess, SCREEN_QUANTILE))


def recurring_evidence(
    shares: np.ndarray, images: np.ndarray, class_id: int, *, other_images: np.ndarray, other_mean_share: np.ndarray,
    pixel_std: float, window: int, mislabel_flags: np.ndarray | None = None, min_size: int = 5,
    seeds: int = SEEDS,
) -> ClusterEvidence | None:
    """The best recurring-pattern candidate of one class (module docstring), or None.

    shares (n, H, W) relevance shares and images (n, C, H, W) of the class's samples;
    other_images (m, C, H, W): a reference sample of other classes' inputs; other_mean_share
    (H, W): the other classes' mean share map; window: the search window in input pixels.
    A class larger than :data:`MAX_SEARCH` is searched on an evenly spaced subset; the
    candidate's distances, members and positions then cover every sample of the class.
    """
    n = len(shares)
    if n < 2 * min_size:
        return None
    subset = np.arange(n)[:: -(-n // MAX_SEARCH)]
    flags = np.zeros(n) if mislabel_flags is None else np.asarray(mislabel_flags, np.float64)
    search = _ClassSearch(shares[subset], images[subset], other_images, other_mean_share, pixel_std, window,
                          flags[subset], min_size)
    best = None
    windows = _best_windows(search.grid_shares, [search.grid_shares.mean(0), search.grid_other_share], search.win)
    by_excess = _seeds(windows, seeds)
    every = _seeds(windows, 2 * len(search.images))
    every = every[::-(-len(every) // COPY_SEEDS)]  # evenly spaced: a pattern on 5% of the class keeps a few seeds
    by_copies = search.most_copied(every, seeds // 2)
    for i, r, c in list(dict.fromkeys(by_copies + by_excess)):
        found = search.grow(i, r + search.pad, c + search.pad)
        if found is not None and (best is None or found["score"] > best["score"]):
            best = found
    if best is None:
        return None
    evidence = _as_evidence(best, class_id, search)
    if len(subset) < n:  # every sample's distance and position, from the pattern found on the subset
        dist, positions = recurring_distances(images, evidence, pixel_std)
        members = np.flatnonzero(dist <= evidence.pattern_cut)
        evidence.members = evidence.carriers = members.tolist()
        evidence.size, evidence.size_fraction = int(len(members)), float(len(members) / n)
        evidence.positions = positions[members].tolist()
        evidence.mislabel_fraction = float(flags[members].mean()) if len(members) else 0.0
    return evidence


def recurring_distances(images: np.ndarray, evidence: ClusterEvidence, pixel_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Each image's distance (σ_x) to a recurring candidate's pattern at its best position, and that
    position (top-left row, col in input pixels; negative where the pattern hangs over the border)."""
    return recurring_distances_many(images, [evidence], pixel_std)[0]


def recurring_distances_many(images: np.ndarray, candidates: list[ClusterEvidence],
                             pixel_std: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`recurring_distances` of several candidates: those searched on the same grid with
    patterns of one size are matched together (one pass over the images for all of them)."""
    out: list = [None] * len(candidates)
    groups: dict[tuple, list[int]] = {}
    for i, evidence in enumerate(candidates):
        groups.setdefault((evidence.search_factor, np.shape(evidence.pattern)), []).append(i)
    for (f, shape), members in groups.items():
        patterns = np.stack([np.asarray(candidates[i].pattern, np.float32) for i in members])
        weights = np.stack([np.asarray(candidates[i].pattern_weights, np.float32) for i in members])
        pad = shape[-1] // 2
        grid = np.pad(downsample(np.asarray(images, np.float32), f), [(0, 0), (0, 0), (pad, pad), (pad, pad)])
        dist, pos = match(grid, patterns, weights, pixel_std)
        for j, i in enumerate(members):
            out[i] = (dist[j].astype(np.float64), (pos[j] - pad) * f)
    return out


def recurring_scores(images: np.ndarray, evidence: ClusterEvidence, pixel_std: float) -> np.ndarray:
    """Per-sample artifact score against a recurring candidate (:func:`scores_at` its distances)."""
    return scores_at(evidence, recurring_distances(images, evidence, pixel_std)[0])


def scores_at(evidence: ClusterEvidence, distances: np.ndarray) -> np.ndarray:
    """Artifact scores at distances (σ_x) to a recurring candidate: score · exp(-d / :data:`MATCH_SCALE`)."""
    return max(evidence.score, 0.0) * np.exp(-np.asarray(distances) / MATCH_SCALE)


class _ClassSearch:
    """One class's inputs and shares on the search grid, padded by half a window on every side
    (a pattern may hang over the border); positions inside are padded-grid coordinates."""

    def __init__(self, shares, images, other_images, other_mean_share, pixel_std, window, flags, min_size):
        self.factor = search_factor(*shares.shape[-2:])
        f = self.factor
        self.win = max(2, window // f)
        self.pad = self.win // 2
        self.grid_shares = downsample(shares, f) * f ** 2  # block sums: still shares
        image_pad = [(0, 0), (0, 0), (self.pad, self.pad), (self.pad, self.pad)]
        self.images = np.pad(downsample(np.asarray(images, np.float32), f), image_pad, mode="constant")
        others = np.pad(downsample(np.asarray(other_images, np.float32), f), image_pad, mode="constant")
        self.others = others
        self.shares = np.pad(self.grid_shares, image_pad[1:])
        self.grid_other_share = downsample(other_mean_share, f) * f ** 2
        self.other_share = np.pad(self.grid_other_share, image_pad[2:])
        self.pixel_std, self.flags, self.min_size = pixel_std, flags, min_size
        self.matcher = PatternMatcher(self.images, self.win, self.win)
        self.other_matcher = PatternMatcher(others, self.win, self.win) if len(others) else None

    def contrast(self, pattern, rest):
        """Per-pixel weight (w, w): how far the pattern stands from what the rest has there, in σ_x, capped
        at 1; below :data:`CONTRAST_FLOOR` σ_x a pixel does not count (faint halo around a pattern)."""
        raw = np.abs(pattern - rest).mean(axis=0) / self.pixel_std
        return np.where(raw >= CONTRAST_FLOOR, np.minimum(raw, 1.0), 0.0)

    def pattern_weights(self, pattern, kappa, strict, rest, ring: bool = False):
        """Pixel weights (w, w) of a pattern: its constant pixels (κ ≥ 0.5) inside the bounding box of those that
        stand out from the rest of the class, and the ring of pixels around that box that nine of ten members
        share (strict constancy ≥ 0.5). The box keeps a tag's dark pixels, which equal the background but are its
        structure; the ring (once the group is found: on a small group it would favour the few members whose
        surroundings agree) keeps a thin line's dark side (outside the image: zeros), without which a line
        along an edge would match any run of ink."""
        constant = _sharp(kappa)
        distinct = (self.contrast(pattern, rest) > 0) & (constant > 0)
        if not distinct.any():
            return np.zeros_like(constant)
        rows, cols = np.flatnonzero(distinct.any(1)), np.flatnonzero(distinct.any(0))
        box = np.zeros_like(constant, dtype=bool)
        box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
        weights = np.where(box, constant, 0.0)
        if ring:
            around = np.zeros_like(box)
            around[max(rows[0] - 1, 0):rows[-1] + 2, max(cols[0] - 1, 0):cols[-1] + 2] = True
            weights += np.where(around & ~box, _sharp(strict), 0.0)
        return weights

    def rest_median(self, rest_rows, positions):
        """The median input of ``rest_rows`` at each of ``positions``, then the median over positions (C, w, w)."""
        w = self.win
        rest = self.images[rest_rows]
        places, counts = np.unique(np.asarray(positions).reshape(-1, 2), axis=0, return_counts=True)  # once per place
        at = np.stack([np.median(rest[:, :, a:a + w, b:b + w], axis=0) for a, b in places])
        return np.median(np.repeat(at, counts, axis=0), axis=0)

    def most_copied(self, seeds: list[tuple[int, int, int]], count: int) -> list[tuple[int, int, int]]:
        """The ``count`` seed windows with the most exact copies (distance ≤ :data:`COPY_DISTANCE`) among
        the class's samples, at any position, on the pixels where the seed differs from the other classes
        (at least ``min_size`` copies). One matrix product for all seeds: cheap, and it finds a pasted
        pattern whose relevance is modest in every sample (its copies are what stands out)."""
        w, std = self.win, self.pixel_std
        patterns, weights, kept = [], [], []
        for i, r, c in seeds:
            seed = self.images[i][:, r + self.pad:r + self.pad + w, c + self.pad:c + self.pad + w]
            if seed.std() < SPREAD_SCALE * std or not len(self.others):
                continue
            rest = np.median(self.others[:, :, r + self.pad:r + self.pad + w, c + self.pad:c + self.pad + w], axis=0)
            weight = self.contrast(seed, rest)
            if weight.sum() > 0:
                patterns.append(seed), weights.append(weight), kept.append((i, r, c))
        if not kept:
            return []
        copies = np.concatenate([
            (self.matcher.match(np.stack(patterns[s:s + 64]), np.stack(weights[s:s + 64]), std)[0] <= COPY_DISTANCE).sum(1)
            for s in range(0, len(kept), 64)]) - 1
        order = np.argsort(-copies, kind="stable")[:count]
        return [kept[j] for j in order if copies[j] >= self.min_size]

    def cut(self, d: np.ndarray) -> float:
        """The distance below which a member shares the pattern: the largest log-gap between the
        (min_size+1)-th smallest and the (min_size+1)-th largest distance (a group may be most of the class)."""
        order = np.sort(d)
        k = min(self.min_size, len(d) - 1)
        return _largest_log_gap(d, order[k], order[len(d) - 1 - k])

    def grow(self, i, r, c) -> dict | None:
        """Align the class on the seed window's pattern, find the group that shares it, score the group."""
        w, n, std = self.win, len(self.images), self.pixel_std
        seed = self.images[i][:, r:r + w, c:c + w]
        if seed.std() < SPREAD_SCALE * std:                             # a flat patch is background, not a pattern
            return None
        # before there is a group, "what others have there" comes from the other classes: a pattern that most
        # of this class carries at one place is the class's own median there
        rest = (np.median(self.others[:, :, r:r + w, c:c + w], axis=0) if len(self.others)
                else self.rest_median(np.arange(n), [(r, c)]))
        weights = self.contrast(seed, rest)
        if weights.sum() < 1e-6:
            return None
        dist, pos = self.matcher.match(seed[None], weights[None], std)
        near = np.argsort(dist[0], kind="stable")[:NEIGHBOURS]
        pattern, kappa, strict = _constancy(aligned(self.images[near], pos[0][near], w, w), std)
        weights = self.pattern_weights(pattern, kappa, strict, rest)
        for round_ in range(3):  # group, group re-weighted on itself, group again with the ring
            if weights.sum() < 1e-6:
                return None
            dist, pos = self.matcher.match(pattern[None], weights[None], std)
            d, p = dist[0].astype(np.float64), pos[0]
            cut = self.cut(d)
            members = d <= cut
            if members.sum() < self.min_size or members.sum() > n - self.min_size:
                return None
            if round_ < 2:
                pattern, kappa, strict = _constancy(aligned(self.images[members], p[members], w, w), std)
                rest = self.rest_median(~members, p[members])
                weights = self.pattern_weights(pattern, kappa, strict, rest, ring=round_ == 1)
        p = self.relevant_positions(pattern, weights, members, p, cut)
        return self._score(members, p, d, cut, pattern, kappa, rest, weights, (i, r, c))

    def relevant_positions(self, pattern, weights, members, positions, cut) -> np.ndarray:
        """Each member's position: of the places where it carries the pattern (distance ≤ ``cut``), the one
        where its relevance evidence is largest (its window share against the rest of the class's and the
        other classes' mean share there, the two log-ratios of the module docstring). A tag sits in one
        place, which this keeps; a pattern that recurs within an image (a texture) is scored where the
        model's relevance singles it out, not at whichever copy matched first."""
        from .clever_hans import window_sums

        w, out = self.win, positions.copy()
        rest = window_sums(self.shares[~members].mean(0), w).ravel() + DELTA
        others = window_sums(self.other_share, w).ravel() + DELTA
        rows = np.flatnonzero(members)
        for start in range(0, len(rows), CHUNK // 4):  # a block of members at a time
            block = rows[start:start + CHUNK // 4]
            carries = self.matcher.distance_maps(pattern[None], weights[None], self.pixel_std, block)[..., 0] <= cut
            share = window_sums(self.shares[block], w).reshape(len(block), -1) + DELTA
            evidence = 2 * np.log(share) - np.log(rest) - np.log(others)
            best = np.where(carries, evidence, -np.inf).argmax(1)
            found = carries[np.arange(len(block)), best]  # the member's own best match is always among them
            out[block[found]] = np.stack([best // self.matcher.q, best % self.matcher.q], axis=-1)[found]
        return out

    def _score(self, members, p, d, cut, pattern, kappa, rest, weights, seed) -> dict:
        w, std = self.win, self.pixel_std
        at = p[members]
        own_maps = aligned(self.shares[members], at, w, w)              # (g, w, w)
        conc = float(own_maps.sum(axis=(1, 2)).mean())
        others = self.shares[~members]
        b_class = float(np.mean([others[:, a:a + w, b:b + w].sum(axis=(1, 2)).mean() for a, b in at]))
        b_data = float(np.mean([self.other_share[a:a + w, b:b + w].sum() for a, b in at]))
        evidence = float(np.log((conc + DELTA) / (b_class + DELTA)) + np.log((conc + DELTA) / (b_data + DELTA)))
        on_pattern = own_maps.mean(0) * self.contrast(pattern, rest)   # relevance on the pattern's own pixels
        wk = on_pattern / max(on_pattern.sum(), 1e-12) * kappa
        constancy = float(wk.sum())
        distinct = float((np.abs(pattern - rest).mean(axis=0) * wk).sum() / max(constancy, 1e-12) / std)
        f = float(members.mean())
        e = 0.0
        if self.other_matcher is not None and weights.sum() > 0:
            e = float((self.other_matcher.match(pattern[None], weights[None], std)[0][0] <= cut).mean())
        mislabel = float(self.flags[members].mean())
        inside = max(float(np.quantile(d[members], 0.9)), EXACT_FLOOR)
        outside = float(np.quantile(d[~members], 0.1))
        separation = float(np.clip(np.log10(max(outside, 1e-12) / inside) / SEPARATION_DECADES, 0.0, 1.0))
        score = (evidence * constancy * float(1 - np.exp(-distinct / DISTINCT_SCALE)) * min(1.0, f / SIZE_FRACTION)
                 * (1 - mislabel) * f / (f + e + 1e-12) * separation) / SCORE_UNIT
        return {"score": score, "members": members, "positions": p, "distances": d, "cut": cut, "pattern": pattern,
                "weights": weights, "conc": conc, "b_class": b_class, "b_data": b_data, "evidence": evidence,
                "constancy": constancy, "distinct": distinct, "mislabel": mislabel, "other_rate": e,
                "separation": separation, "seed": seed}


def _as_evidence(found: dict, class_id: int, search: _ClassSearch) -> ClusterEvidence:
    """The candidate in input pixels: positions (top-left, may be negative: over the border) and window scaled back."""
    f, w, pad = search.factor, search.win, search.pad
    _i, r, c = found["seed"]
    members = found["members"]
    positions = (found["positions"] - pad) * f
    r0, c0 = (r - pad) * f, (c - pad) * f
    return ClusterEvidence(
        class_id=int(class_id), resolution=0, cluster=-1, size=int(members.sum()), size_fraction=float(members.mean()),
        window=(int(r0), int(c0), int(r0 + w * f), int(c0 + w * f)), concentration=found["conc"],
        baseline=found["b_class"], dataset_baseline=found["b_data"], relevance_evidence=found["evidence"],
        pattern_constancy=found["constancy"], pattern_distinctiveness=found["distinct"],
        mislabel_fraction=found["mislabel"], score=float(found["score"]), pattern_cut=float(found["cut"]),
        members=np.flatnonzero(members).tolist(), carriers=np.flatnonzero(members).tolist(),
        pattern=found["pattern"].tolist(), pattern_weights=found["weights"].tolist(),
        placement="recurring", search_factor=f, other_rate=found["other_rate"], separation=found["separation"],
        positions=positions[members].tolist(),
    )
