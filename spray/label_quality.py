"""Mislabel evidence from the audited model alone: its probabilities and its feature-space neighbours.

Used when no training dynamics were recorded. The inputs are what the explain pass gives for
every sample i: its logits z_i (K classes), its penultimate features f_i (the input of the
model's last ``nn.Linear``, possibly a random projection of it) and its given label y_i
(-1: unusable, ignored everywhere).

**Consensus.** p_i = softmax(z_i). N(i) are the k nearest other labelled samples in feature
space (Euclidean). The sample's own model prediction and its neighbours' *given* labels vote
together, the model's vote weighted like one neighbour's:

    c_ij = (p_ij + #{n ∈ N(i) : y_n = j}) / (|N(i)| + 1).

The neighbour vote is SimiFeat's (Zhu, Dong & Liu 2022, "Detecting corrupted labels without
training a model to predict", ICML): samples close in a trained model's feature space share
their true class, and with noise rate below 1/2 their given labels outvote a single wrong one.
It is what rescues in-sample audits: the audited model has been fit to the noisy labels, so
p_i leans towards a wrong y_i (it memorizes), while f_i still sits among samples of its true
class. p_i adds what the neighbours lack: ties among them, and samples whose neighbours are
themselves mixed. Without features (or with fewer than two labelled samples) c_i = p_i.

**Per-class thresholds** (Northcutt, Jiang & Chuang 2021, "Confident learning: estimating
uncertainty in dataset labels", JAIR, Eq. 2): t_j = mean of c_ij over the samples labelled j,
the typical self-confidence of class j (floored at 1/K; a class nobody is labelled with takes
the mean threshold of the others). Consensus is compared in these class-relative units, so a
class the model is generally less sure about is not flagged for that alone.

**Score and suspect.**

    mislabel_score_i = max_{j ≠ y_i} c_ij / t_j  -  c_{i y_i} / t_{y_i}       (in [-K, K])
    mislabel_suspect_i = mislabel_score_i > 0

i.e. some other class clears its threshold by a larger factor than the given label clears its
own (the class-calibrated form of CL's "argmax of the confident classes is not the given
label"). Higher means more likely mislabeled; NaN where y_i = -1.

Evidence (digits 32x32 with 10% symmetric noise and the tag on half of class 3, the audit's
small CNN trained on the noisy labels with its default recipe, logits and features of those
same training images; seeds 0-4, each trained with one and with two torch threads): AUROC
against the flipped labels 0.993-0.9998, where cleanlab's ``get_label_quality_scores`` on the
same probabilities reaches 0.944-0.976 (this module with ``features=None``: 0.953-0.982);
suspects at precision 0.92-0.99 and recall 0.93-0.99, where ``find_label_issues`` recalls
0.06-0.25. Tuned on seeds 0-1, checked on asymmetric noise, 30% noise and a 100-epoch run that
fits every noisy label. Considered and not adopted: the confident joint's off-diagonal as the
suspect rule (recall 0.22-0.48: in-sample thresholds are high, so few true classes clear
theirs); cosine instead of Euclidean neighbours (no better on seeds 0-1, worse on asymmetric
noise); a larger model weight (0.5 instead of 1/(k+1): recall 0.83-0.94, and 0.10 after
memorization, where 1/(k+1) keeps 0.82-0.90).

**Cost.** O(N·K) time in row chunks of :data:`CHUNK_ENTRIES` entries and O(N·k) memory besides
the inputs: no N×N or N×K×K structure; :func:`label_quality_from_blocks` reads the logits block by
block in two passes, so they never need to be in memory at once. The neighbour search is
:func:`unhans.spray.graph.knn_graph`: exact (scikit-learn) for small N; for large N it projects
features wider than 64 dims on 48 principal components and uses NN-descent (pynndescent), seeded
by ``seed``. Measured at N = 2·10^5, K = 1000, D = 128 on 2 cores: 3 s without features, 61 s
with (the search dominates), 0.7 GB above the 0.9 GB of inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from .graph import knn_graph

CHUNK_ENTRIES = 1 << 22  # rows x classes handled at once (32 MiB of float64)
METHOD = "consensus of model probabilities and feature-space neighbour labels, per-class thresholds"


@dataclass
class LabelQuality:
    """Per-sample mislabel evidence, aligned with the input rows.

    ``score``: (N,) float64, higher = more likely mislabeled, NaN where the label is -1.
    ``suspect``: (N,) bool, ``score > 0`` (False where the label is -1).
    ``evidence``: JSON-able description of what was used, with counts.
    """

    score: np.ndarray
    suspect: np.ndarray
    evidence: dict


LogitBlocks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]
"""Called once per pass (two passes); each call yields ``(rows, logits)`` blocks: sample ids (any
order, every sample exactly once per pass) and their (len(rows), K) logits."""


def label_quality_from_model(logits: np.ndarray, labels: np.ndarray, features: np.ndarray | None = None, *,
                             n_neighbors: int = 10, seed: int = 0) -> LabelQuality:
    """Mislabel score and suspects of every sample from the audited model's logits and features.

    logits (N, K); labels (N,) integers in 0..K-1, or -1 for a sample to ignore; features
    (N, D) penultimate features or None (probabilities alone). ``n_neighbors`` other samples
    vote (fewer if fewer are labelled, recorded in the evidence); ``seed`` drives the
    approximate neighbour search used for large N. See the module docstring for the formulas.
    """
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must be (N, K) with K >= 2 classes, got shape {logits.shape}")
    if np.shape(labels) != (len(logits),):
        raise ValueError(f"labels must be (N,) = ({len(logits)},) like logits, got shape {np.shape(labels)}")
    rows = max(1, CHUNK_ENTRIES // logits.shape[1])

    def blocks():
        for start in range(0, len(logits), rows):
            yield np.arange(start, min(start + rows, len(logits))), logits[start:start + rows]

    return label_quality_from_blocks(blocks, labels, logits.shape[1], features, n_neighbors=n_neighbors, seed=seed)


def label_quality_from_blocks(blocks: LogitBlocks, labels: np.ndarray, num_classes: int,
                              features: np.ndarray | None = None, *, n_neighbors: int = 10,
                              seed: int = 0) -> LabelQuality:
    """:func:`label_quality_from_model` with the logits read block by block, twice (thresholds,
    then scores): memory O(N·(k + D)) for the neighbour votes and features, never N×K, so the
    logits of a million samples and a thousand classes can stay on disk."""
    labels, features = _validated(labels, num_classes, features, n_neighbors, seed)
    n = len(labels)
    labelled = np.flatnonzero(labels >= 0)
    votes, reduction = None, None
    if features is not None and len(labelled) >= 2:
        found, reduction = _neighbour_labels(features[labelled], labels[labelled], min(n_neighbors, len(labelled) - 1), seed)
        votes = np.full((n, found.shape[1]), -1, dtype=np.int64)
        votes[labelled] = found

    thresholds = _class_thresholds(blocks, labels, votes, num_classes)
    score = np.full(n, np.nan)
    for rows, consensus, y in _labelled_consensus(blocks, labels, votes, num_classes):
        relative = consensus / thresholds
        local = np.arange(len(relative))
        given = relative[local, y].copy()
        relative[local, y] = -np.inf
        score[rows] = relative.max(axis=1) - given
    suspect = np.zeros(n, dtype=bool)
    suspect[labelled] = score[labelled] > 0

    used_features = votes is not None
    k = int(votes.shape[1]) if used_features else 0
    evidence = {
        "method": METHOD if used_features else "model probabilities, per-class thresholds",
        "references": ["Northcutt et al. 2021 (confident learning)"]
        + (["Zhu et al. 2022 (SimiFeat)"] if used_features else []),
        "probabilities": True,
        "features": used_features,
        "n_neighbors": k,
        "n_neighbors_requested": int(n_neighbors),
        "model_weight": 1.0 / (k + 1),
        "feature_dims": None if features is None else int(features.shape[1]),
        "searched_dims": None if not used_features else
        int(features.shape[1] if reduction is None else reduction.components.shape[0]),
        "n_samples": int(n),
        "n_labelled": int(len(labelled)),
        "n_ignored": int(n - len(labelled)),
        "n_suspects": int(suspect.sum()),
        "class_threshold_min": float(thresholds.min()),
        "class_threshold_median": float(np.median(thresholds)),
        "class_threshold_max": float(thresholds.max()),
        "seed": int(seed),
    }
    if features is not None and not used_features:
        evidence["features_unused"] = "fewer than two labelled samples"
    return LabelQuality(score=score, suspect=suspect, evidence=evidence)


def _labelled_consensus(blocks: LogitBlocks, labels: np.ndarray, votes: np.ndarray | None, num_classes: int):
    """One pass over the logits: (sample ids, consensus c (M, K), given labels) of the labelled
    samples, at most :data:`CHUNK_ENTRIES` entries at a time; checks shapes, finiteness and that
    every sample comes exactly once."""
    n = len(labels)
    seen = np.zeros(n, dtype=bool)
    step = max(1, CHUNK_ENTRIES // num_classes)
    for rows, logits in blocks():
        rows = np.asarray(rows, dtype=np.int64)
        logits = np.asarray(logits)
        if logits.shape != (len(rows), num_classes):
            raise ValueError(f"logits must be (rows, K) = ({len(rows)}, {num_classes}) per block, "
                             f"got shape {logits.shape}")
        if not np.issubdtype(logits.dtype, np.number) or np.issubdtype(logits.dtype, np.complexfloating):
            raise ValueError(f"logits must be real numbers, got dtype {logits.dtype}")
        if len(rows) and (rows.min() < 0 or rows.max() >= n or seen[rows].any() or len(np.unique(rows)) < len(rows)):
            raise ValueError(f"logits blocks must cover sample ids 0..{n - 1} once each per pass")
        seen[rows] = True
        for start in range(0, len(rows), step):
            part_rows, part = rows[start:start + step], logits[start:start + step]
            y = labels[part_rows]
            keep = y >= 0
            bad = keep & ~np.isfinite(part).all(axis=1)
            if bad.any():
                raise ValueError(f"logits must be finite in labelled rows, row {int(part_rows[np.argmax(bad)])} "
                                 "has NaN or infinity (label it -1 to ignore the sample)")
            part_rows, y = part_rows[keep], y[keep]
            yield part_rows, _consensus(part[keep], None if votes is None else votes[part_rows]), y
    if not seen.all():
        raise ValueError(f"logits blocks must cover sample ids 0..{n - 1}; sample {int(np.argmin(seen))} is missing")


def _neighbour_labels(features: np.ndarray, labels: np.ndarray, k: int, seed: int):
    """(M, k) given labels of each sample's k nearest other samples (-1 where the search left none)."""
    graph = knn_graph(np.ascontiguousarray(features, dtype=np.float32), k + 1, seed)
    idx = graph.indices
    # The sample itself is usually first, but not always (duplicates): move it last, keep k.
    order = np.argsort(idx == np.arange(len(idx))[:, None], axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)[:, :k]
    return np.where(idx >= 0, labels[np.maximum(idx, 0)], -1), graph.reduction


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _consensus(logits: np.ndarray, votes: np.ndarray | None) -> np.ndarray:
    """c = (p + neighbour label counts) / (neighbours + 1), one row per sample; p without votes."""
    c = _softmax(logits)
    if votes is None:
        return c
    valid = votes >= 0
    weight = 1.0 / (valid.sum(axis=1) + 1.0)
    c *= weight[:, None]
    rows, cols = np.nonzero(valid)
    np.add.at(c, (rows, votes[rows, cols]), weight[rows])
    return c


def _class_thresholds(blocks: LogitBlocks, labels: np.ndarray, votes, num_classes: int) -> np.ndarray:
    """t_j = mean of c_ij over samples labelled j (CL's per-class threshold), floored at 1/K."""
    counts = np.zeros(num_classes)
    sums = np.zeros(num_classes)
    for _, consensus, y in _labelled_consensus(blocks, labels, votes, num_classes):
        counts += np.bincount(y, minlength=num_classes)
        sums += np.bincount(y, weights=consensus[np.arange(len(y)), y], minlength=num_classes)
    present = counts > 0
    thresholds = np.ones(num_classes)  # no labelled sample at all: nothing to calibrate
    if present.any():
        thresholds[present] = sums[present] / counts[present]
        thresholds[~present] = thresholds[present].mean()
    return np.maximum(thresholds, 1.0 / num_classes)


def _validated(labels, num_classes, features, n_neighbors, seed):
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be (N,) like the logits' rows, got shape {labels.shape}")
    n = len(labels)
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.number):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if n and not np.array_equal(labels, np.round(labels)):
        raise ValueError("labels must be integers (class index, or -1 to ignore a sample)")
    labels = labels.astype(np.int64)
    bad = (labels < -1) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f"labels must lie in 0..{num_classes - 1} (K = {num_classes} logits) or be -1, "
                         f"got {labels[bad][0]} at row {int(np.flatnonzero(bad)[0])}")
    labelled = labels >= 0
    if features is not None:
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[0] != n or features.shape[1] < 1:
            raise ValueError(f"features must be (N, D) with N = {n} like logits, got shape {features.shape}")
        if not np.issubdtype(features.dtype, np.number) or np.issubdtype(features.dtype, np.complexfloating):
            raise ValueError(f"features must be real numbers, got dtype {features.dtype}")
        _check_finite(features, labelled, "features")
    if isinstance(n_neighbors, (bool, np.bool_)) or not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be an integer >= 1, got {n_neighbors!r}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return labels, features


def _check_finite(values: np.ndarray, labelled: np.ndarray, name: str) -> None:
    """NaN or infinity in a labelled row is an error (rows labelled -1 are never read)."""
    rows = max(1, CHUNK_ENTRIES // max(1, values.shape[1]))
    for start in range(0, len(values), rows):
        finite = np.isfinite(values[start:start + rows]).all(axis=1) | ~labelled[start:start + rows]
        if not finite.all():
            raise ValueError(f"{name} must be finite in labelled rows, row {start + int(np.argmin(finite))} "
                             f"has NaN or infinity (label it -1 to ignore the sample)")
