"""The random artifact generator of issue #27's benchmark (``benchmarks/artifact_draws.py``)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the benchmark modules, last: no shadowing

from artifact_draws import (  # noqa: E402
    FAMILIES, IMAGE_FAMILIES, SERIES_FAMILIES, ArtifactDraw, draw_artifact, flip_symmetric, plant,
)

SHAPES = {"image": [(1, 32, 32), (3, 32, 32)], "series": [(6, 80)]}


def _batch(kind: str, shape: tuple[int, ...], n: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "image":  # digit-like: a dark background with bright strokes, and some mid-grey content
        x = np.where(rng.random((n, *shape)) < 0.3, rng.uniform(0.5, 1.0, (n, *shape)), 0.0)
        return x.astype(np.float32)
    return rng.normal(0, 1, (n, *shape)).astype(np.float32)


def _draw_of(family: str, kind: str, shape, start: int = 0) -> ArtifactDraw:
    return draw_artifact(start, kind, shape, num_classes=5, families=[family])


def test_a_draw_is_deterministic_in_its_seed_and_plain_data():
    for kind, shape in (("image", (3, 32, 32)), ("series", (6, 80))):
        a, b = (draw_artifact(17, kind, shape, num_classes=10) for _ in range(2))
        assert a == b
        assert json.loads(json.dumps(a.to_dict())) == a.to_dict()
        x = _batch(kind, shape)
        np.testing.assert_array_equal(a.apply(x, np.random.default_rng(3)), b.apply(x, np.random.default_rng(3)))
    draws = {json.dumps(draw_artifact(s, "image", (1, 32, 32), 10).to_dict(), sort_keys=True) for s in range(20)}
    assert len(draws) == 20


@pytest.mark.parametrize("kind,family", [(k, f) for k, table in FAMILIES.items() for f in table])
def test_every_family_changes_its_inputs_and_keeps_them_finite_and_in_range(kind, family):
    for shape in SHAPES[kind]:
        for seed in range(6):  # several draws: each placement and parameter set
            draw = _draw_of(family, kind, shape, seed)
            assert draw.family == family and draw.placement in FAMILIES[kind][family].placements
            x = _batch(kind, shape, seed=seed)
            out = draw.apply(x, np.random.default_rng(seed))
            assert out.shape == x.shape and out.dtype == np.float32
            assert np.isfinite(out).all()
            changed = np.abs(out - x).reshape(len(x), -1).max(1) > 1e-6
            assert changed.all(), (family, draw.placement, shape, seed, changed.mean())
            if kind == "image":
                assert out.min() >= 0.0 and out.max() <= 1.0
            np.testing.assert_array_equal(x, _batch(kind, shape, seed=seed))  # the input is left alone


def test_placements_fixed_is_the_same_everywhere_and_random_moves():
    x = np.zeros((30, 1, 32, 32), np.float32)
    fixed = next(d for s in range(200) if (d := _draw_of("glyph", "image", (1, 32, 32), s)).placement == "fixed")
    moving = next(d for s in range(200) if (d := _draw_of("glyph", "image", (1, 32, 32), s)).placement == "random")
    out = fixed.apply(x, np.random.default_rng(0))
    assert (out == out[0]).all()
    out = moving.apply(x, np.random.default_rng(0))
    assert len({out[i].tobytes() for i in range(len(out))}) > 10


def test_planting_changes_exactly_the_tagged_samples_of_the_poisoned_class():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 40)
    for seed in range(30):
        kind = ("image", "series")[seed % 2]
        shape = SHAPES[kind][0]
        x = _batch(kind, shape, n=len(labels), seed=seed)
        draw = draw_artifact(seed, kind, shape, num_classes=5)
        planted = plant(draw, x, labels, rng)
        changed = np.abs(planted.inputs - x).reshape(len(x), -1).max(1) > 0
        np.testing.assert_array_equal(changed, planted.tagged)
        assert (planted.true_labels[planted.tagged] == draw.poisoned_class).all()
        assert planted.tagged.sum() == round(draw.fraction * 40)
        assert 0.2 <= draw.fraction <= 0.6
        assert not (planted.flipped & planted.tagged).any()
        np.testing.assert_array_equal(planted.flipped, planted.labels != labels)
        np.testing.assert_array_equal(planted.true_labels, labels)
        assert planted.flipped.sum() == (round(0.1 * len(labels)) if draw.label_noise else 0)


def test_symmetric_flips_move_to_another_class_and_spare_the_protected():
    labels = np.repeat(np.arange(4), 50)
    protected = labels == 2
    noisy = flip_symmetric(labels, 0.1, 4, np.random.default_rng(1), protected=protected)
    assert (noisy != labels).sum() == 20 and (noisy[protected] == 2).all()
    assert noisy.min() >= 0 and noisy.max() <= 3


def test_over_200_seeds_every_family_placement_label_noise_and_class_appears():
    for kind, shape in (("image", (3, 32, 32)), ("series", (6, 80))):
        draws = [draw_artifact(s, kind, shape, num_classes=10) for s in range(200)]
        assert {d.family for d in draws} == set(FAMILIES[kind])
        assert {(d.family, d.placement) for d in draws} == {(f, p) for f, fam in FAMILIES[kind].items()
                                                           for p in fam.placements}
        assert {d.label_noise for d in draws} == {False, True}
        assert {d.poisoned_class for d in draws} == set(range(10))
        fractions = np.array([d.fraction for d in draws])
        assert fractions.min() >= 0.2 and fractions.max() <= 0.6 and fractions.std() > 0.08


def test_families_are_data_and_unknown_choices_are_named():
    assert set(IMAGE_FAMILIES) == {"glyph", "line", "dots", "frame", "texture", "cast", "region"}
    assert set(SERIES_FAMILIES) == {"burst", "level_shift", "periodic", "slope"}
    with pytest.raises(ValueError, match="kind"):
        draw_artifact(0, "audio", (1, 100), 2)
    with pytest.raises(ValueError, match="families"):
        draw_artifact(0, "series", (6, 80), 2, families=["glyph"])


def test_a_colour_cast_shifts_each_rgb_channel_and_a_grey_image_globally():
    x = np.full((4, 3, 8, 8), 0.5, np.float32)
    draw = _draw_of("cast", "image", (3, 8, 8))
    offsets = (draw.apply(x, np.random.default_rng(0)) - 0.5)[0, :, 0, 0]
    assert np.all((np.abs(offsets) >= 0.15 - 1e-6) & (np.abs(offsets) <= 0.4 + 1e-6))
    grey = _draw_of("cast", "image", (1, 8, 8))
    assert len(grey.params["offsets"]) == 1


def test_series_artifacts_stay_on_their_features_with_amplitudes_in_feature_std():
    x = np.zeros((20, 8, 64), np.float32)
    std = [float(s) for s in np.arange(1, 9)]
    for family in SERIES_FAMILIES:
        draw = draw_artifact(5, "series", (8, 64), 3, feature_std=std, families=[family])
        out = draw.apply(x, np.random.default_rng(0))
        touched = np.flatnonzero(np.abs(out).max((0, 2)) > 0)
        np.testing.assert_array_equal(touched, draw.params["features"])
        assert 1 <= len(touched) <= 3
        peak = np.abs(out).max((0, 2))[touched] / np.array(std)[touched]  # in each feature's std
        assert (peak >= 0.4).all() and (peak <= 4.01).all(), (family, peak)
