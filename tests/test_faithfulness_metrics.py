"""Faithfulness metrics: agreement with Quantus 0.6 on the same model, inputs and explanations, and the
properties the definitions guarantee."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from unhans.explainers.faithfulness import abpc, pixel_flipping
from unhans.explainers.quantus_adapter import explain_func
from unhans.explainers.randomization import average_ranks, parameter_randomization, randomized_models, spearman
from unhans.explainers.registry import make_explainer
from unhans.explainers.robustness import infidelity, max_sensitivity
from unhans.pipeline.small_cnn import small_cnn


def _digits(n: int = 24, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    digits = load_digits()
    x = torch.tensor(digits.images[:n], dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - 0.3) / 0.4, torch.tensor(digits.target[:n])  # normalized: the background is not 0


def _model(size: int = 16) -> nn.Module:
    torch.manual_seed(0)
    x, y = _digits(200, size)
    model = small_cnn(image_size=size, width=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _model()


@pytest.mark.parametrize("method", ["lrp", "gradient_x_input"])
def test_pixel_flipping_curves_equal_quantus(model, method):
    quantus = pytest.importorskip("quantus")
    x, y = _digits()
    a = explain_func(model, x.numpy(), y.numpy(), method=method)
    # LRP heatmaps have exact ties (symmetric contributions); Quantus orders them with numpy's unstable sort,
    # unhans with a stable one. A tie split by a step boundary would make the curves differ for that reason only,
    # so both get the same heatmaps with ties broken by a tiny ramp.
    a = a.astype(np.float64) + np.arange(a[0].size).reshape(a.shape[1:]) * 1e-12
    assert all(len(np.unique(row)) == row.size for row in a)
    metric = quantus.PixelFlipping(features_in_step=8, perturb_baseline="black", disable_warnings=True)
    theirs = np.array(metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a, device="cpu",
                             softmax=True))
    ours = pixel_flipping(model, x, y, torch.from_numpy(a), regions_per_step=8, replacement="black")
    assert theirs.shape == (len(x), 16 * 16 // 8)
    np.testing.assert_allclose(ours.probabilities[:, 1:].numpy(), theirs, atol=1e-4, rtol=0)
    logits = np.array(metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a, device="cpu",
                             softmax=False))
    np.testing.assert_allclose(ours.logits[:, 1:].numpy(), logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["lrp", "gradient"])
def test_randomization_correlations_equal_quantus_mprt(model, method):
    quantus = pytest.importorskip("quantus")
    x, y = _digits()
    metric = quantus.MPRT(layer_order="top_down", seed=42, disable_warnings=True)
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, device="cpu",
                    explain_func=explain_func, explain_func_kwargs={"method": method})
    ours = parameter_randomization(
        model, lambda m, xs, ts: make_explainer(m, method)(xs, ts).sum(1), x, y, order="top_down", seed=42)
    assert ours.layers == [name for name in theirs if name != "original"]
    for step, name in enumerate(ours.layers):
        np.testing.assert_allclose(ours.similarity[step].numpy(), np.array(theirs[name]), atol=1e-3, rtol=0)


def test_randomized_models_leave_the_model_and_the_global_random_state_alone(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    names = [name for name, _ in randomized_models(model)]
    assert torch.equal(torch.rand(3), expected)
    assert names == ["12", "10", "6", "3", "0"]  # the last linear first (top down)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_average_ranks_match_scipy_with_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    values = torch.tensor([[3.0, 1.0, 3.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 2.0, -1.0]])
    expected = np.stack([scipy_stats.rankdata(row) for row in values.numpy()])
    np.testing.assert_allclose(average_ranks(values).numpy(), expected)
    a, b = torch.randn(5, 40), torch.randn(5, 40).round()
    theirs = [scipy_stats.spearmanr(a[i], b[i])[0] for i in range(5)]
    np.testing.assert_allclose(spearman(a, b).numpy(), theirs, atol=1e-12)


def test_curves_start_unperturbed_and_end_fully_replaced(model):
    x, y = _digits(6)
    relevance = torch.randn(6, 16, 16)
    curves = pixel_flipping(model, x, y, relevance, region=4, replacement="mean")
    with torch.no_grad():
        clean = model(x).gather(1, y[:, None])[:, 0]
        gone = model(x.mean(dim=(2, 3), keepdim=True).expand_as(x)).gather(1, y[:, None])[:, 0]
    assert curves.logits.shape == (6, 17) and float(curves.removed[-1]) == 1.0
    torch.testing.assert_close(curves.logits[:, 0], clean)
    torch.testing.assert_close(curves.logits[:, -1], gone)


@pytest.mark.parametrize("replacement", ["blur", "inpaint"])
def test_morf_of_the_explainer_beats_its_lerf(model, replacement):
    x, y = _digits(64)
    relevance = make_explainer(model, "lrp")(x, y)
    morf = pixel_flipping(model, x, y, relevance, region=2, regions_per_step=4, replacement=replacement)
    lerf = pixel_flipping(model, x, y, relevance, order="lerf", region=2, regions_per_step=4, replacement=replacement)
    assert float(abpc(morf, lerf).mean()) > 0
    assert float(morf.aopc().mean()) > float(lerf.aopc().mean())


def test_infidelity_is_zero_for_a_linear_model_explained_by_its_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,))
    gradient = make_explainer(model, "gradient")(x, y)
    assert float(infidelity(model, x, y, gradient).max()) < 1e-10
    assert float(infidelity(model, x, y, torch.randn_like(x)).min()) > 1e-3


def test_max_sensitivity_is_zero_for_a_constant_explanation_and_positive_for_gradient_times_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,))
    gradient = make_explainer(model, "gradient")
    times_input = make_explainer(model, "gradient_x_input")
    assert float(max_sensitivity(gradient, x, y).max()) < 1e-6
    assert float(max_sensitivity(times_input, x, y, radius=0.1).min()) > 1e-3


def test_regions_cut_short_by_the_image_edge_score_their_own_sum():
    from unhans.explainers.faithfulness import region_scores

    scores = region_scores(torch.ones(1, 1, 10, 10), 2, 4)
    assert scores.tolist() == [[16, 16, 8, 16, 16, 8, 8, 8, 4]]
    assert region_scores(torch.ones(1, 1, 10), 1, 4).tolist() == [[4, 4, 2]]


def test_a_model_without_resettable_layers_skips_randomization_instead_of_failing(model):
    from unhans.explainers.explainer_check import CheckSettings, check_explainer, verdict

    x, y = _digits(16)
    scripted = torch.jit.script(model)
    explain = lambda m, xs, ts: make_explainer(m, "gradient")(xs, ts).sum(1)  # noqa: E731
    settings = CheckSettings(region=4, steps=8)
    summary = verdict([check_explainer(scripted, explain, explain, x, y, settings)], "gradient", settings)
    assert "randomization" not in summary and "reset_parameters" in summary["randomization_skipped"]


@pytest.mark.parametrize("shape", [(2, 3, 12, 12), (2, 5, 40)], ids=["rgb", "series"])
def test_blur_replacement_blurs_every_channel_on_its_own(shape):
    from unhans.explainers.faithfulness import _gaussian_blur

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    spatial = len(shape) - 2
    blurred = _gaussian_blur(x, sigma=1.5, spatial=spatial)
    assert blurred.shape == x.shape
    for c in range(shape[1]):
        torch.testing.assert_close(blurred[:, c:c + 1], _gaussian_blur(x[:, c:c + 1], sigma=1.5, spatial=spatial))
    assert float(blurred.std()) < float(x.std())
