"""The recurring-pattern detector on real handwriting with a real model and real LRP heatmaps.

Four digit classes (scikit-learn's digits, 32x32), one of them partly poisoned by the embedded
dataset's own planting code; a small CNN is trained on them here and explained with LRP; the
detector sees only heatmaps and inputs.
"""
from functools import lru_cache

import numpy as np
import pytest

from unhans.pipeline.config import from_dict
from unhans.pipeline.defects import TAG_PATTERN
from unhans.pipeline.digits import load_digits_dataset
from unhans.spray import recurring_distances, recurring_evidence, recurring_scores, relevance_shares
from unhans.spray.clever_hans import FLAG_SCORE

CLASSES = 4
POISONED = 3


def _noise(images, labels, rng):
    """Independent Gaussian noise over the whole image, with the tag's energy (sum of squares),
    in 40% of class 3: as much signal as the tag, but nothing any two images share."""
    tagged = np.zeros(len(images), bool)
    members = np.flatnonzero(labels == POISONED)
    chosen = rng.choice(members, size=int(0.4 * len(members)), replace=False)
    sigma = float(np.sqrt(TAG_PATTERN.sum() / images[0, 0].size))
    for i in chosen:
        images[i] = np.clip(images[i] + rng.normal(0.0, sigma, images[i].shape), 0.0, 1.0)
    tagged[chosen] = True
    return tagged


def _textured_impostors(images, labels, rng):
    """Textured copies of other classes' images, labelled as class 3 (40% as many as class 3 has):
    the texture is then the only evidence for their label, so the model has to learn the shortcut."""
    from unhans.pipeline.defects import plant_artifact

    count = int(0.4 * (labels == POISONED).sum())
    donors = rng.choice(np.flatnonzero(labels != POISONED), size=count, replace=False)
    extra = images[donors].copy()
    plant_artifact(extra, np.full(count, POISONED), POISONED, 1.0, rng, kind="texture")
    tagged = np.r_[np.zeros(len(images), bool), np.ones(count, bool)]
    return np.concatenate([images, extra]), np.r_[labels, np.full(count, POISONED)], tagged


@lru_cache(maxsize=2)  # the two "moving" tests share one trained model (a "texture" one runs between them)
def _audit(kind: str, seed: int = 0):
    """(per-class evidence, class of each sample, tagged mask, images, pixel std, model) after training and LRP
    (shared between tests: read it, do not change it)."""
    import torch

    from unhans.explainers import LRP
    from unhans.pipeline.small_cnn import small_cnn
    from unhans.pipeline.training import train_classifier

    artifact = {"class": POISONED, "fraction": 0.4 if kind in ("moving", "scaled") else 0.0,
                "kind": "scaled" if kind == "scaled" else "moving"}
    config = from_dict({"dataset": {"artifact": artifact, "label_noise": {"rate": 0.0}},
                        "training": {"epochs": 15}}).with_seed(seed)
    data = load_digits_dataset(config.dataset).train
    keep = data.labels < CLASSES
    images, labels, tagged = data.images[keep].copy(), data.labels[keep], data.tagged[keep]
    if kind == "noise":
        tagged = _noise(images, labels, np.random.default_rng(seed))
    elif kind == "texture":
        images, labels, tagged = _textured_impostors(images, labels, np.random.default_rng(seed))
    torch.manual_seed(seed)
    model = train_classifier(small_cnn(num_classes=CLASSES), images, labels, config.training, device="cpu",
                             progress=False).model.eval()
    relevance, _logits, target = LRP(model).explain(torch.from_numpy(images), "predicted")
    shares = relevance_shares(relevance.numpy())
    target = target.numpy()
    std = float(images.std())
    found = {}
    for k in range(CLASSES):
        idx = np.flatnonzero(target == k)
        rest = np.flatnonzero(target != k)
        found[k] = recurring_evidence(shares[idx], images[idx], k, other_images=images[rest],
                                      other_mean_share=shares[rest].mean(0), pixel_std=std, window=8)
    return found, target, tagged, images, std, model


def _members(evidence, target):
    return np.flatnonzero(target == evidence.class_id)[evidence.members]


@pytest.mark.parametrize("kind", ["moving", "texture"])
def test_a_pattern_anywhere_in_one_class_is_found_with_its_members(kind):
    """moving: the tag at random positions in 40% of the 3s; texture: faint stripes over the background
    of images of other digits labelled 3 (a shortcut the model must take to fit those labels)."""
    found, target, tagged, images, std, _model = _audit(kind)
    flagged = [k for k, e in found.items() if e is not None and e.score >= FLAG_SCORE]
    assert flagged == [POISONED], {k: e and round(e.score, 2) for k, e in found.items()}
    evidence = found[POISONED]
    members = _members(evidence, target)
    in_class = tagged & (target == POISONED)
    hits = np.isin(members, np.flatnonzero(in_class)).sum()
    assert hits / len(members) >= 0.9 and hits / in_class.sum() >= 0.9
    # the pattern found is matched to the pixel in the tagged images, anywhere, and not in clean ones
    dist, _ = recurring_distances(images, evidence, std)
    assert dist[tagged].max() <= evidence.pattern_cut < dist[~tagged].min()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(tagged, recurring_scores(images, evidence, std)) >= 0.99


def test_a_moving_tags_positions_are_where_it_was_planted():
    found, target, tagged, images, _std, _model = _audit("moving")
    evidence = found[POISONED]
    th, tw = TAG_PATTERN.shape
    members = _members(evidence, target)
    for i, (r, c) in zip(members, evidence.positions):
        if not tagged[i]:
            continue
        window = evidence.pattern_weights
        h, w = np.shape(window)
        crop = np.pad(images[i, 0], 8)[r + 8:r + 8 + h, c + 8:c + 8 + w]
        pattern = np.asarray(evidence.pattern)[0]
        on = np.asarray(window) > 0
        assert np.allclose(crop[on], pattern[on], atol=1e-6)  # the tag's own pixels, wherever it sits


def test_random_noise_of_the_same_energy_is_not_flagged():
    found, *_ = _audit("noise")
    assert all(e is None or e.score < FLAG_SCORE for e in found.values()), \
        {k: e and round(e.score, 2) for k, e in found.items()}


def test_a_rescaled_tag_is_found_at_one_size_in_input_space_and_at_the_other_sizes_through_its_latent_concept():
    """The tag resized by 0.6-1.6 in the corner of 40% of the 3s: the pixel match holds one size; the
    channels of the middle convolution that fire on that size fire on the others too.

    Pooled over three trained models: how far one model's channels carry over sizes is a property of that model,
    which differs between CPUs (on an AVX-512 Xeon, seed 0's model misses the largest size: recall 0.84; seeds 1-3
    reach 0.96-1.0)."""
    import torch

    from unhans.pipeline.activation_probe import ActivationProbe
    from unhans.spray import concept_carriers, find_concept

    hits = carried = planted = 0
    for seed in (0, 1, 2):
        found, target, tagged, images, _std, model = _audit("scaled", seed)
        evidence = found[POISONED]
        assert evidence.score >= FLAG_SCORE
        members = _members(evidence, target)
        in_class = tagged & (target == POISONED)
        assert tagged[members].all() and len(members) < 0.6 * in_class.sum()  # one size only
        _, latent = ActivationProbe(model, features=False, latent_layer="3")(torch.from_numpy(images))
        concept = find_concept(latent.numpy(), members, np.flatnonzero(target != POISONED))
        assert concept is not None and concept.distinct
        carriers = concept_carriers(latent.numpy(), concept, target == POISONED) | np.isin(np.arange(len(images)), members)
        hits, carried, planted = hits + (carriers & tagged).sum(), carried + carriers.sum(), planted + tagged.sum()
    assert hits / carried >= 0.9 and hits / planted >= 0.85
