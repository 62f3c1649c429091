"""A flagged group's concept in the latent profile: its channels, its levels, and the carriers it adds."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from unhans.pipeline.activation_probe import ActivationProbe, latent_layer_path, latent_profile
from unhans.spray import concept_artifact_scores, concept_carriers, find_concept
from unhans.spray.latent_concepts import DISTINCT_RATIO, MIN_REFERENCE, concept_scores

DIMS = 8
CONCEPT = [2, 5]


def _profiles(member_level: float, hidden_level: float, concept=CONCEPT, seed: int = 0):
    """(latent, members, hidden carriers, rest of the class, reference): profiles N(0, 1) in every
    channel, the concept channels at ``member_level`` (± 0.3) in the found group and at
    ``hidden_level`` in the carriers the input-space search missed (another size of the pattern)."""
    rng = np.random.default_rng(seed)
    reference, members, hidden, rest = np.arange(0, 900), np.arange(900, 920), np.arange(920, 950), np.arange(950, 1000)
    latent = rng.normal(0.0, 1.0, (1000, DIMS))
    latent[np.ix_(members, concept)] = member_level + rng.normal(0, 0.3, (len(members), len(concept)))
    latent[np.ix_(hidden, concept)] = hidden_level + rng.normal(0, 0.3, (len(hidden), len(concept)))
    return latent, members, hidden, rest, reference


def test_the_concept_is_the_channels_the_group_has_and_the_reference_lacks_and_it_finds_the_missed_carriers():
    latent, members, hidden, rest, reference = _profiles(member_level=6.0, hidden_level=4.0)
    concept = find_concept(latent, members, reference)
    assert concept.channels == CONCEPT and concept.distinct
    assert concept.member_level >= DISTINCT_RATIO * concept.reference_level
    in_class = np.zeros(len(latent), bool)
    in_class[900:] = True
    carriers = np.flatnonzero(concept_carriers(latent, concept, in_class))
    assert set(members) | set(hidden) <= set(carriers)  # the missed size too
    # in the class the cut is the reference's 99% quantile: the rest of the class (drawn like the reference
    # here) passes it 1 time in 100 (one of its 50 with this seed), the reference beyond the class never does
    extra = set(carriers) - set(members) - set(hidden)
    assert extra <= set(rest) and len(extra) <= 2
    # a carrier predicted as another class needs more than the reference's 99% quantile: the geometric middle
    score = concept_scores(latent, concept)
    assert concept.reference_level < concept.cut < concept.member_level
    assert set(np.flatnonzero(concept_carriers(latent, concept, np.zeros(len(latent), bool)))) == set(
        np.flatnonzero(score > concept.cut))
    with pytest.raises(ValueError, match="one flag per sample"):
        concept_carriers(latent, concept, in_class[:10])
    scores = concept_artifact_scores(latent, concept)
    assert scores.min() >= 0 and scores.max() <= 1
    assert np.median(scores[members]) == pytest.approx(1.0, abs=0.05)
    assert scores[hidden].min() > scores[np.r_[reference, rest]].max()  # the score ranks every carrier first


def test_a_class_whose_own_features_raise_the_concepts_channels_is_cut_higher():
    """The rest of the class sits 1.5 above the other classes in the concept's channels (a 7's top bar
    and a tag in the top corner): cut at the reference's 99% quantile, a third of it would be taken."""
    latent, members, hidden, rest, reference = _profiles(member_level=6.0, hidden_level=5.0)
    latent[np.ix_(rest, CONCEPT)] += 1.5
    in_class = np.zeros(len(latent), bool)
    in_class[900:] = True
    naive = find_concept(latent, members, reference)
    assert naive.class_shift == 0.0 and (concept_carriers(latent, naive, in_class)[rest]).sum() > 10
    concept = find_concept(latent, members, reference, np.flatnonzero(in_class))
    # half the class carries the concept here, so its lower quartile is the rest's median: δ errs high, by
    # the gap between the reference's median and lower quartile (0.48), and the carriers stay above it
    assert 1.2 <= concept.class_shift <= 1.5 + 0.48 + 0.4
    carriers = concept_carriers(latent, concept, in_class)
    assert carriers[members].all() and carriers[hidden].all() and carriers[rest].sum() <= 2


def test_a_group_barely_above_the_other_classes_adds_nothing():
    latent, members, _hidden, _rest, reference = _profiles(member_level=3.0, hidden_level=2.0, concept=[2])
    concept = find_concept(latent, members, reference)
    # the members pass the channel test (median 3.0 above the reference's 99% quantile, 2.33), but their
    # level is not 1.5 times the reference level
    assert concept is not None and concept.channels == [2] and not concept.distinct
    assert not concept_carriers(latent, concept, np.ones(len(latent), bool)).any()
    assert not concept_artifact_scores(latent, concept).any()


def test_no_channel_or_too_few_reference_samples_give_no_concept_and_bad_input_raises():
    latent, members, _hidden, _rest, reference = _profiles(member_level=0.0, hidden_level=0.0)
    assert find_concept(latent, members, reference) is None
    latent, members, *_ = _profiles(member_level=6.0, hidden_level=4.0)
    assert find_concept(latent, members, reference[:MIN_REFERENCE - 1]) is None
    with pytest.raises(ValueError, match="latent must be"):
        find_concept(latent[:, :, None], members, reference)
    with pytest.raises(ValueError, match="at least one member"):
        find_concept(latent, members[:0], reference)


def _net():
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 36, 2))


def test_the_latent_profile_is_each_channels_max_and_mean_of_its_positive_part_at_the_middle_convolution():
    torch.manual_seed(0)
    model, x = _net().eval(), torch.randn(4, 1, 6, 6)
    assert latent_layer_path(model, "auto") == "2" and latent_layer_path(model, "none") is None
    features, latent = ActivationProbe(model, features=True, latent_layer="2")(x)
    hidden = model[2](model[1](model[0](x))).clamp_min(0).flatten(2)
    assert latent.shape == (4, 8)
    torch.testing.assert_close(latent, torch.cat([hidden.amax(2), hidden.mean(2)], 1))
    assert features.shape == (4, 128)  # the last Linear's input (180 wide), projected
    assert ActivationProbe(model, features=False, latent_layer=None)(x) == (None, None)
    with pytest.raises(ValueError, match="explain.latent_layer='nope'"):
        latent_layer_path(model, "nope")


def test_a_layer_run_twice_in_one_forward_is_profiled_over_both_calls():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 5, 5)
    both = torch.cat([a.clamp_min(0).flatten(2), b.clamp_min(0).flatten(2)], 2)
    torch.testing.assert_close(latent_profile([a, b]), torch.cat([both.amax(2), both.mean(2)], 1))
