"""Specification of the gradient, Integrated Gradients and Occlusion explainers, and of the
contract every explainer shares (shape, dtype, device, no model mutation, thread safety)."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from unhans.explainers import LRP, Gradient, GradientTimesInput, IntegratedGradients, Occlusion, SmoothGrad


pytestmark = pytest.mark.usefixtures("single_thread")


def linear_model(features: int = 12, classes: int = 3) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(features, classes)


def relu_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 4),
    )  # fmt: skip


def images(batch: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def scores(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).gather(1, t[:, None])[:, 0]


EXPLAINERS = {
    "lrp": lambda m: LRP(m),
    "gradient": Gradient,
    "gradient_times_input": GradientTimesInput,
    "smoothgrad": lambda m: SmoothGrad(m, n_samples=3),
    "integrated_gradients": lambda m: IntegratedGradients(m, steps=8),
    "occlusion": lambda m: Occlusion(m, window=4),
}


@pytest.mark.parametrize("name", EXPLAINERS)
def test_output_matches_input_shape_dtype_device_and_model_is_untouched(name):
    model = relu_cnn()
    x, t = images(), torch.tensor([0, 1, 2, 3])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        out = model(x)
    attribution = EXPLAINERS[name](model)(x, t)
    assert attribution.shape == x.shape and attribution.dtype == x.dtype and attribution.device == x.device
    assert torch.isfinite(attribution).all() and attribution.abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), out)


@pytest.mark.parametrize("name", EXPLAINERS)
def test_concurrent_calls_equal_sequential_calls(name):
    explainer = EXPLAINERS[name](relu_cnn())
    inputs = [images(seed=s) for s in range(3)]
    t = torch.tensor([3, 2, 1, 0])
    expected = [explainer(x, t) for x in inputs]
    results: dict[int, list[torch.Tensor]] = {}

    def work(i: int) -> None:
        results[i] = [explainer(inputs[(i + k) % 3], t) for k in range(3)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, outputs in results.items():
        for k, attribution in enumerate(outputs):
            assert torch.allclose(attribution, expected[(i + k) % 3], rtol=1e-5, atol=1e-7)


def test_gradient_of_linear_model_is_the_target_weight_row():
    model = linear_model()
    x, t = torch.randn(5, 12), torch.tensor([0, 1, 2, 0, 1])
    assert torch.allclose(Gradient(model)(x, t), model.weight[t].detach())
    assert torch.allclose(GradientTimesInput(model)(x, t), x * model.weight[t].detach())


def test_gradient_matches_autograd_on_cnn():
    model, x, t = relu_cnn(), images(), torch.tensor([1, 1, 0, 3])
    x_in = x.clone().requires_grad_()
    model(x_in).gather(1, t[:, None]).sum().backward()
    assert torch.allclose(Gradient(model)(x, t), x_in.grad)


def test_smoothgrad_is_seeded_and_reduces_to_gradient_without_noise():
    model, x, t = relu_cnn(), images(), torch.tensor([0, 1, 2, 3])
    assert torch.allclose(SmoothGrad(model, n_samples=2, noise_level=0.0)(x, t), Gradient(model)(x, t))
    first = SmoothGrad(model, n_samples=4, seed=1)(x, t)
    assert torch.equal(first, SmoothGrad(model, n_samples=4, seed=1)(x, t))
    assert not torch.allclose(first, SmoothGrad(model, n_samples=4, seed=2)(x, t))


def smooth_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.SiLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.SiLU(), nn.Linear(16, 4),
    )  # fmt: skip


def test_integrated_gradients_is_complete_within_one_percent_at_64_steps_on_a_smooth_model():
    model, x, t = smooth_cnn(), images(batch=16), torch.arange(16) % 4
    attribution = IntegratedGradients(model, steps=64, internal_batch_size=512)(x, t)
    difference = scores(model, x, t) - scores(model, torch.zeros_like(x), t)
    assert ((attribution.sum((1, 2, 3)) - difference).abs() <= 0.01 * difference.abs()).all()


def test_integrated_gradients_is_exact_for_bias_free_relu_net_from_zero():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, bias=False), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(8 * 7 * 7, 4, bias=False))  # fmt: skip  # f(αx) = α f(x)
    x, t = images(), torch.tensor([0, 1, 2, 3])
    attribution = IntegratedGradients(model, steps=4)(x, t)
    assert torch.allclose(attribution.sum((1, 2, 3)), scores(model, x, t), rtol=1e-4, atol=1e-7)


def test_integrated_gradients_on_relu_net_with_biases_converges_with_steps():
    """Kinks of ReLU/max pooling make the midpoint rule converge slowly: 64 steps do not give 1% here."""
    model = relu_cnn()
    x, t = torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(1)), torch.arange(32) % 4
    difference = scores(model, x, t) - scores(model, torch.zeros_like(x), t)
    errors = []
    for steps in (16, 64, 256):
        attribution = IntegratedGradients(model, steps=steps, internal_batch_size=4096)(x, t)
        errors.append(float(((attribution.sum((1, 2, 3)) - difference).abs() / difference.abs()).median()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01
    assert errors[1] > 0.01  # measured: median 2.3% at 64 steps, 0.5% at 256 (README)


def test_integrated_gradients_with_baseline_and_chunking():
    model, x, t = relu_cnn(), images(), torch.tensor([0, 1, 2, 3])
    baseline = torch.full((1, 1, 16, 16), 0.5)
    one_step_per_pass = IntegratedGradients(model, steps=16, baseline=baseline)(x, t)
    chunked = IntegratedGradients(model, steps=16, baseline=baseline, internal_batch_size=24)(x, t)
    assert torch.allclose(one_step_per_pass, chunked, atol=1e-6)
    difference = scores(model, x, t) - scores(model, baseline.expand_as(x), t)
    assert torch.allclose(chunked.sum((1, 2, 3)), difference, rtol=0.05, atol=0.05 * difference.abs().mean())


def test_integrated_gradients_of_linear_model_is_exact():
    model = linear_model()
    x, t = torch.randn(5, 12), torch.tensor([0, 1, 2, 0, 1])
    assert torch.allclose(IntegratedGradients(model, steps=3)(x, t), x * model.weight[t].detach(), atol=1e-6)
    smoothed = IntegratedGradients(model, steps=3, smooth_samples=5, smooth_sigma=0.3, seed=0)(x, t)
    assert not torch.allclose(smoothed, x * model.weight[t].detach(), atol=1e-3)  # baselines are noisy
    assert torch.equal(smoothed, IntegratedGradients(model, steps=3, smooth_samples=5, smooth_sigma=0.3, seed=0)(x, t))


def test_occlusion_with_window_one_on_linear_model_is_weight_times_input():
    model = linear_model()
    x, t = torch.randn(5, 12), torch.tensor([0, 1, 2, 0, 1])
    assert torch.allclose(Occlusion(model, window=1)(x, t), x * model.weight[t].detach(), atol=1e-6)


class FirstElement(nn.Module):
    """Score of class 0 is the first element of the sample; class 1 is the last."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return torch.stack([flat[:, 0], flat[:, -1]], dim=1)


def test_occlusion_windows_never_wrap_around_edges_and_cover_everything():
    x = torch.ones(2, 5)
    drop = Occlusion(FirstElement(), window=2, stride=2)(x, torch.tensor([0, 1]))
    # windows [0,1], [2,3] and the flush window [3,4]; none contains both 4 and 0;
    # element 3 averages the drops of [2,3] (0) and [3,4] (1)
    assert torch.equal(drop[0], torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0]))
    assert torch.equal(drop[1], torch.tensor([0.0, 0.0, 0.0, 0.5, 1.0]))


def test_occlusion_batching_and_fill_value():
    model, x, t = relu_cnn(), images(), torch.tensor([0, 1, 2, 3])
    one_by_one = Occlusion(model, window=4, stride=3, fill=0.5, batch_size=1)(x, t)
    batched = Occlusion(model, window=4, stride=3, fill=0.5, batch_size=1000)(x, t)
    assert torch.allclose(one_by_one, batched, atol=1e-6)
    patches = Occlusion(model, window=8, fill=0.5)(x, t)
    occluded = x.clone()
    occluded[:, :, :8, 8:] = 0.5
    assert torch.allclose(patches[:, 0, 0, 8], scores(model, x, t) - scores(model, occluded, t), atol=1e-6)


def test_invalid_arguments_are_rejected_with_the_parameter_name():
    model = linear_model()
    with pytest.raises(ValueError, match="steps"):
        IntegratedGradients(model, steps=0)
    with pytest.raises(ValueError, match="n_samples"):
        SmoothGrad(model, n_samples=0)
    with pytest.raises(ValueError, match="window"):
        Occlusion(model, window=0)
    with pytest.raises(ValueError, match="target"):
        Gradient(model)(torch.randn(2, 12), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="out of range"):
        Gradient(model)(torch.randn(2, 12), torch.tensor([0, 3]))


@pytest.mark.parametrize("name", EXPLAINERS)
def test_explainers_work_when_built_and_called_under_inference_mode(name):
    model, x, t = relu_cnn(), images(), torch.tensor([0, 1, 2, 3])
    expected = EXPLAINERS[name](model)(x, t)
    with torch.inference_mode():
        explainer = EXPLAINERS[name](model)
        attribution = explainer(x.clone(), t.clone())
    assert torch.allclose(attribution, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", EXPLAINERS)
def test_explain_returns_logits_and_explains_the_predicted_class_in_the_same_pass(name):
    model = relu_cnn().eval()
    x = images(5)
    explainer = EXPLAINERS[name](model)
    with torch.no_grad():
        logits = model(x)
    predicted = explainer.explain(x, "predicted")
    assert torch.equal(predicted.target, logits.argmax(1))
    torch.testing.assert_close(predicted.logits, logits, rtol=1e-5, atol=1e-5)
    assert not predicted.logits.requires_grad
    torch.testing.assert_close(predicted.relevance, explainer(x, logits.argmax(1)), rtol=1e-5, atol=1e-7)
    other = logits.argmin(1)
    given = explainer.explain(x, other)
    assert torch.equal(given.target, other)
    torch.testing.assert_close(given.relevance, explainer(x, other), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="predicted"):
        explainer.explain(x, "argmax")


def test_gradient_methods_accept_a_torchscript_model_and_match_the_eager_one():
    import torch.nn as nn

    from unhans.explainers import Gradient, GradientTimesInput

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(5, 1, 8, 8)
    for method in (Gradient, GradientTimesInput):
        eager = method(model).explain(x)
        script = method(scripted).explain(x)
        torch.testing.assert_close(script.relevance, eager.relevance)
        assert torch.equal(script.target, eager.target)
    assert all(p.grad is None for p in scripted.parameters())
