"""The Clever-Hans verdict: outlier statistic among classes, which candidates get checked, when a class is flagged."""
import numpy as np
import pytest

from unhans.spray import decide, plan_checks, ranking
from unhans.spray.verdict import (REFERENCE_CHECKS, CHECK_ALL_CLASSES, CHECK_TOP, EFFECT_FLAG_Z, FLAG_Z, LOG_SPREAD_FLOOR, MIN_REFERENCE,
                                  outlier_scores)


def _confirmation(confirmed: bool, effect: float = 0.2) -> dict:
    return {"confirmed": confirmed, "effect": effect, "ci_low": effect - 0.05, "ci_high": effect + 0.05}


def test_a_score_far_above_the_other_classes_is_an_outlier_whatever_its_scale():
    # the held-out edge line: 0.98 against a runner-up of 0.22 (no absolute threshold may hide it)
    small = {0: 0.98, 1: 0.22, 2: 0.03, 3: 0.02, 4: 0.05, 5: 0.01, 6: 0.04, 7: 0.02, 8: 0.03, 9: 0.01}
    large = {c: 40 * s for c, s in small.items()}
    z_small, z_large = outlier_scores(small), outlier_scores(large)
    assert z_small[0] >= FLAG_Z and z_large[0] >= FLAG_Z
    assert max(z for c, z in z_small.items() if c != 0) < FLAG_Z


def test_near_equal_small_scores_are_not_outliers():
    # a tiny MAD must not turn 0.05 against 0.01 into a huge z (the spread floor)
    scores = {0: 0.05, **{c: 0.01 for c in range(1, 10)}}
    assert outlier_scores(scores)[0] < np.log(0.10 / 0.06) / LOG_SPREAD_FLOOR + 1e-9
    assert outlier_scores(scores)[0] < FLAG_Z


def test_checks_cover_each_detectors_best_classes_and_its_outliers():
    classes = CHECK_ALL_CLASSES + 8
    pattern = {c: 0.1 * (c + 1) for c in range(classes)}
    region = {c: 1.0 for c in range(classes)}
    region[2] = 30.0
    planned = plan_checks({"pattern": pattern, "region": region})
    assert ("region", 2) in planned and planned[0] == ("region", 2)   # the outlier first
    assert {("pattern", c) for c in range(classes - 3, classes)} <= set(planned)
    # the top 3 and the reference classes evenly spaced over the ranking (best first: class 39 is rank 0)
    spaced = set(np.linspace(0, classes - 1, REFERENCE_CHECKS).round().astype(int).tolist())
    assert {c for d, c in planned if d == "pattern"} == {classes - 1 - i for i in set(range(CHECK_TOP)) | spaced}
    everything = plan_checks({"pattern": pattern, "region": region}, check_all=True)
    assert len(everything) == 2 * classes


def test_few_classes_are_all_checked():
    scores = {"pattern": {c: 0.1 for c in range(10)}, "region": {c: 1.0 for c in range(10)}}
    assert len(plan_checks(scores)) == 20


def test_an_effect_far_above_the_other_classes_flags_a_class_whose_score_does_not_stand_out():
    scores = {"pattern": {}, "region": {c: 2.5 + 0.1 * (c % 3) for c in range(10)}}
    confirmations = {("region", c): _confirmation(True, 0.08) for c in range(10)}  # sub-styles move the model a little
    confirmations[("region", 5)] = _confirmation(True, 0.6)
    verdicts = decide(scores, confirmations)
    assert verdicts[5].flagged and verdicts[5].effect_outlier >= EFFECT_FLAG_Z and "effect stands out" in verdicts[5].reason
    assert not any(v.flagged for c, v in verdicts.items() if c != 5)
    assert ranking(verdicts)[0] == 5
    # with too few other classes checked there is no reference, and no effect z
    few = {("region", c): confirmations[("region", c)] for c in range(1, 1 + MIN_REFERENCE)}
    assert ("region", 5) in few
    assert not decide(scores, few)[5].flagged


def test_with_many_classes_the_effects_reference_is_spread_over_the_ranking_not_the_suspects():
    """At 1 000 classes the best classes and the outliers are mostly suspects: five planted tags with large
    effects and a sixth whose score barely stands out (z about 2.4 on audit_scale) but whose paste moves the
    model as much. Against the checked suspects alone its effect z was 0; against classes spread over the
    ranking (which move the model little) it stands out."""
    rng = np.random.default_rng(0)
    pattern = {c: float(rng.uniform(0.01, 0.05)) for c in range(1000)}
    for c in range(5):
        pattern[c] = 5.0
    pattern[5] = 0.2
    planned = plan_checks({"pattern": pattern, "region": {}})
    assert ("pattern", 5) in planned and len(planned) <= CHECK_TOP + REFERENCE_CHECKS + 6
    confirmations = {key: _confirmation(True, 0.6 if key[1] < 6 else float(rng.uniform(-0.02, 0.03)))
                     for key in planned}
    verdicts = decide({"pattern": pattern, "region": {}}, confirmations)
    assert {c for c, v in verdicts.items() if v.flagged} == set(range(6))
    assert verdicts[5].effect_outlier >= EFFECT_FLAG_Z and verdicts[5].outlier < FLAG_Z


def test_a_class_is_flagged_only_when_outlier_and_counterfactual_agree():
    scores = {"pattern": {0: 5.0, 1: 0.2, 2: 0.1, 3: 0.15, 4: 0.12, 5: 4.0}, "region": {}}
    scores["pattern"].update({c: 0.1 for c in range(6, 10)})
    scores["pattern"][5] = 0.3  # moves the model but is no outlier: a sub-style
    confirmations = {("pattern", 0): _confirmation(True), ("pattern", 5): _confirmation(True),
                     ("pattern", 1): _confirmation(False, 0.0)}
    verdicts = decide(scores, confirmations)
    assert verdicts[0].flagged and "flagged" in verdicts[0].reason
    assert not verdicts[5].flagged and "sub-style" in verdicts[5].reason
    assert not verdicts[1].flagged and "does not raise" in verdicts[1].reason
    assert not verdicts[7].checked and "not checked" in verdicts[7].reason
    # without the counterfactual, the same outlier is not flagged; with a rise below the confirmation bar it is
    assert not decide(scores, {})[0].flagged
    weak = {("pattern", 0): {"confirmed": False, "effect": 0.025, "ci_low": 0.016, "ci_high": 0.034}}
    assert decide(scores, weak)[0].flagged
    # a tight interval around a negligible rise is no agreement (a calibration class: +0.002, score z 7.0)
    negligible = {("pattern", 0): {"confirmed": False, "effect": 0.002, "ci_low": 0.0018, "ci_high": 0.0022}}
    assert not decide(scores, negligible)[0].flagged
    assert ranking(verdicts)[0] == 0


def test_the_verdict_speaks_of_the_detector_that_flags():
    scores = {"pattern": {c: 0.1 for c in range(10)}, "region": {c: 1.0 for c in range(10)}}
    scores["pattern"][4], scores["region"][4] = 0.5, 50.0
    verdicts = decide(scores, {("pattern", 4): _confirmation(False, 0.0), ("region", 4): _confirmation(True)})
    assert verdicts[4].flagged and verdicts[4].detector == "region"


@pytest.mark.parametrize("classes", [10, 1000])
def test_a_planted_class_stands_out_among_many_or_few_classes(classes):
    rng = np.random.default_rng(0)
    scores = {c: float(s) for c, s in enumerate(rng.lognormal(np.log(0.2), 0.6, classes))}
    scores[3] = 5.0
    z = outlier_scores(scores)
    assert z[3] >= FLAG_Z
    assert np.mean([z[c] >= FLAG_Z for c in scores if c != 3]) < 0.01
