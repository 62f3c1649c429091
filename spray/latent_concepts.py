"""A flagged shortcut's concept in the model's latent space: the samples that carry it in any size or place.

The input-space searches (:mod:`.clever_hans`, :mod:`.recurring_patterns`) find a group whose
inputs share one pattern, pixel for pixel. A shortcut that changes size (a watermark rescaled
with its image, a ruler photographed at different distances) breaks that: each size is another
pattern, and the group holds one size only. The model, though, forms one concept for it: the
channels of a middle layer that fire on the pattern fire on its resized copies too (their
receptive fields are smaller than the artifact), and never on the class's own features. So:

1. **profile**: every sample's latent profile ``a`` (2C numbers: each channel's maximum and mean
   over positions, :mod:`unhans.pipeline.activation_probe`);
2. **concept channels**: standardised on the reference samples (the other classes, which do not
   carry the class's shortcut), ``z_j = (a_j − mean_ref,j) / std_ref,j``; a channel j belongs to
   the concept when the group's median ``a_j`` exceeds the reference's 99% quantile of ``a_j``
   (the group has it; nine in ten reference samples less than one in a hundred);
3. **concept score** ``s = Σ_j w_j z_j`` over the concept channels, with ``w`` the group's median
   ``z`` normalised to sum 1 (a projection on the group's typical profile: the channels most
   specific to the group count most); the reference level ``r`` is its 99% quantile over the
   reference samples, the member level ``m`` its median over the group;
4. the concept is **distinct** when ``m ≥ DISTINCT_RATIO · r`` (the group's typical sample stands
   well above what the other classes reach; ``benchmarks/artifact_suite.py``, seeds 0-4: the
   rescaled tags' groups reached 2.3-138 and added 19-43 suspects each; the groups below 1.5 were
   a top-edge line, two textures, and tags whose twin sits in another poisoned class). A distinct
   concept's **carriers** are the class's samples with ``s > r + δ`` and the other classes' samples
   with ``s > sqrt(r · m)`` (the geometric middle of the two levels: among the reference itself,
   ``s > r`` holds for 1 in 100 by construction). δ = max(0, q25(class) − q25(reference)) is how
   far the class's own samples sit above the other classes in the concept's channels (a 7's top
   bar raises the channels of a tag in the top corner): the lower quartile of the class is its
   non-carriers as long as a shortcut covers at most three quarters of its class. Its
   **artifact score** is ``clip(s / m, 0, 1)`` (1 for a typical member).

Nothing here knows the artifact's kind, place or size: the group comes from the input-space
search, the channels from the model.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

CHANNEL_QUANTILE = 0.99   # a concept channel: the group's median above the reference's quantile
REFERENCE_QUANTILE = 0.99  # the reference level r of the concept score
CLASS_QUANTILE = 0.25      # δ compares the class's and the reference's lower quartiles
DISTINCT_RATIO = 1.5       # m / r at which a concept counts as distinct (the group stands apart)
MIN_REFERENCE = 20         # fewer reference samples than this cannot give a 99% quantile worth the name


@dataclass
class LatentConcept:
    """The concept of a group (module docstring): its channels, standardisation and levels."""

    channels: list[int]          # indices into the latent profile (max of channel c: c; mean: C + c)
    center: list[float]          # reference mean of each concept channel
    scale: list[float]           # reference std of each concept channel
    weights: list[float]         # the group's median standardised value per concept channel, summing to 1
    reference_level: float       # r: the reference's 99% quantile of the concept score
    member_level: float          # m: the group's median concept score
    class_shift: float           # δ: how far the class's lower quartile sits above the reference's (≥ 0)
    distinct: bool               # m >= DISTINCT_RATIO * r

    @property
    def cut(self) -> float:
        """The concept score above which a sample of another class carries the concept."""
        return float(np.sqrt(max(self.reference_level, 1e-6) * max(self.member_level, 1e-6)))

    def to_dict(self) -> dict:
        return {**asdict(self), "cut": self.cut}

    @classmethod
    def from_dict(cls, data: dict) -> "LatentConcept":
        return cls(**{k: v for k, v in data.items() if k != "cut"})


def find_concept(latent: np.ndarray, members: np.ndarray, reference: np.ndarray,
                 in_class: np.ndarray | None = None) -> LatentConcept | None:
    """The concept of the group ``members`` against ``reference`` (both index arrays into ``latent``
    (N, D)); None when no channel passes step 2 or there are too few reference samples.
    ``in_class``: index array of the group's class (for δ; default: the members alone, δ then 0)."""
    latent = np.asarray(latent)
    members, reference = np.asarray(members, np.int64), np.asarray(reference, np.int64)
    if latent.ndim != 2:
        raise ValueError(f"latent must be (samples, profile), got shape {latent.shape}")
    if len(members) == 0:
        raise ValueError("find_concept needs at least one member")
    if len(reference) < MIN_REFERENCE:
        return None
    ref = latent[reference]
    channels = np.flatnonzero(np.median(latent[members], axis=0) > np.quantile(ref, CHANNEL_QUANTILE, axis=0))
    if len(channels) == 0:
        return None
    center, scale = ref[:, channels].mean(0), ref[:, channels].std(0) + 1e-6
    typical = np.median((latent[members][:, channels] - center) / scale, axis=0)  # > 0: above the reference's 99%
    concept = LatentConcept(channels.tolist(), center.tolist(), scale.tolist(), (typical / typical.sum()).tolist(),
                            0.0, 0.0, 0.0, False)
    score = concept_scores(latent, concept)
    concept.reference_level = float(np.quantile(score[reference], REFERENCE_QUANTILE))
    concept.member_level = float(np.median(score[members]))
    if in_class is not None and len(in_class):
        lower = np.quantile(score[np.asarray(in_class, np.int64)], CLASS_QUANTILE)
        concept.class_shift = float(max(0.0, lower - np.quantile(score[reference], CLASS_QUANTILE)))
    concept.distinct = bool(concept.member_level >= DISTINCT_RATIO * max(concept.reference_level, 0.0)
                            and concept.member_level > 0)
    return concept


def concept_scores(latent: np.ndarray, concept: LatentConcept) -> np.ndarray:
    """The concept score s (N,) of every sample (step 3)."""
    values = np.asarray(latent)[:, concept.channels].astype(np.float64)
    return ((values - np.asarray(concept.center)) / np.asarray(concept.scale)) @ np.asarray(concept.weights)


def concept_carriers(latent: np.ndarray, concept: LatentConcept, in_class: np.ndarray) -> np.ndarray:
    """(N,) bool: the samples that carry the concept (step 4); none when the concept is not distinct.

    in_class: (N,) bool, the samples of the group's class (cut ``r + δ``); the others are cut at ``sqrt(r · m)``."""
    in_class = np.asarray(in_class, bool)
    if in_class.shape != (len(latent),):
        raise ValueError(f"in_class must be one flag per sample ({len(latent)}), got shape {in_class.shape}")
    if not concept.distinct:
        return np.zeros(len(latent), bool)
    score = concept_scores(latent, concept)
    return np.where(in_class, score > concept.reference_level + concept.class_shift, score > concept.cut)


def concept_artifact_scores(latent: np.ndarray, concept: LatentConcept) -> np.ndarray:
    """(N,) in [0, 1]: clip(s / m, 0, 1); zeros when the concept is not distinct."""
    if not concept.distinct:
        return np.zeros(len(latent))
    return np.clip(concept_scores(latent, concept) / concept.member_level, 0.0, 1.0)
