"""Specification of the LRP explainer (explainers.LRP)."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from unhans.explainers import LRP, UnsupportedModelError


pytestmark = pytest.mark.usefixtures("single_thread")


def small_cnn(bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 32, bias=bias), nn.ReLU(), nn.Linear(32, 10, bias=bias),
    )  # fmt: skip


def randomize_batch_norms(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters for every BatchNorm; eval mode."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    return model.eval()


def bn_cnn() -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(32, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 5),
    )  # fmt: skip
    return randomize_batch_norms(model)


def images(batch: int = 6, channels: int = 1, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def targets(batch: int = 6, classes: int = 10) -> torch.Tensor:
    return torch.arange(batch) % classes


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_untouched(model: nn.Module, before: dict[str, torch.Tensor], x: torch.Tensor, out: torch.Tensor) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks and not module._backward_pre_hooks
    for parameter in model.parameters():
        assert parameter.requires_grad and parameter.grad is None
    with torch.no_grad():
        assert torch.equal(model(x), out)


def test_relevance_of_bias_free_relu_cnn_sums_to_explained_logit():
    model = small_cnn(bias=False)
    x, t = images(), targets()
    relevance = LRP(model)(x, t)
    logit = model(x).gather(1, t[:, None])[:, 0].detach()
    assert torch.allclose(relevance.sum((1, 2, 3)), logit, rtol=1e-2, atol=1e-6)


def test_relevance_has_shape_dtype_and_device_of_input():
    model = small_cnn()
    x = images()
    relevance = LRP(model)(x, targets())
    assert relevance.shape == x.shape and relevance.dtype == x.dtype and relevance.device == x.device
    assert not relevance.requires_grad
    x64 = x.double()
    relevance64 = LRP(model)(x64, targets())
    assert relevance64.dtype == torch.float64
    assert relative_l2(relevance64.float(), relevance) < 1e-4


def test_relevance_is_not_gradient_times_input():
    model = small_cnn()
    x, t = images(), targets()
    x_in = x.clone().requires_grad_()
    model(x_in).gather(1, t[:, None]).sum().backward()
    assert relative_l2(LRP(model)(x, t), x * x_in.grad) > 0.1


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_alpha2_beta1_flat", "epsilon_gamma_box"])
def test_agrees_with_zennit_on_small_cnn(composite):
    zennit = pytest.importorskip("zennit")
    from zennit.attribution import Gradient as ZennitGradient
    from zennit.composites import EpsilonAlpha2Beta1Flat, EpsilonGammaBox, EpsilonPlusFlat

    model, x, t = small_cnn(), images(), targets()
    reference_composite, options = {
        "epsilon_plus_flat": (EpsilonPlusFlat(), {}),
        "epsilon_alpha2_beta1_flat": (EpsilonAlpha2Beta1Flat(), {}),
        "epsilon_gamma_box": (EpsilonGammaBox(low=0.0, high=1.0), {"low": 0.0, "high": 1.0}),
    }[composite]
    with ZennitGradient(model, reference_composite) as attributor:
        _, reference = attributor(x.clone().requires_grad_(), lambda out: out * nn.functional.one_hot(t, 10))
    assert relative_l2(LRP(model, composite, **options)(x, t), reference) <= 1e-3
    assert zennit is not None


def test_agrees_with_zennit_on_net_with_batch_norm():
    pytest.importorskip("zennit")
    from zennit.attribution import Gradient as ZennitGradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat

    model, x, t = bn_cnn(), images(channels=3) - 0.5, targets(classes=5)
    relevance = LRP(model)(x, t)
    reference_model = bn_cnn()
    composite = EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])
    with ZennitGradient(reference_model, composite) as attributor:
        _, reference = attributor(x.clone().requires_grad_(), lambda out: out * nn.functional.one_hot(t, 5))
    assert relative_l2(relevance, reference) <= 1e-3


def test_explaining_never_mutates_the_model():
    model = bn_cnn().train()  # train mode: a forward on it would update running statistics
    x, t = images(channels=3), targets(classes=5)
    before = snapshot(model)
    with torch.no_grad():
        out = model.eval()(x)
    model.train()
    for composite, options in [("epsilon_plus_flat", {}), ("epsilon_gamma_box", {"low": 0.0, "high": 1.0})]:
        explainer = LRP(model, composite, **options)
        explainer(x, t)
        assert model.training
        assert_untouched(model.eval(), before, x, out)
        model.train()


def test_user_hooks_are_not_run_and_stay_registered():
    model = small_cnn()
    calls = []
    handle = model[0].register_forward_hook(lambda *args: calls.append(1))
    LRP(model)(images(), targets())
    assert calls == []
    assert len(model[0]._forward_hooks) == 1
    handle.remove()


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(8, 8)
        self.fc = nn.Linear(8, 8)


class Transformerish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.ModuleList([Block()])
        self.norm = nn.GroupNorm(2, 8)
        self.head = nn.Linear(8, 2)


def test_unsupported_model_error_names_module_paths_and_types():
    with pytest.raises(UnsupportedModelError) as caught:
        LRP(Transformerish())
    message = str(caught.value)
    assert "encoder.0.rnn (LSTM)" in message
    assert "norm (GroupNorm)" in message
    assert caught.value.offenders == [("encoder.0.rnn", "LSTM"), ("norm", "GroupNorm")]


class OverriddenConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


class FunctionalParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2, 1, 3))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):  # its own parameter as a convolution kernel: no LRP rule
        return self.fc(nn.functional.conv1d(x, self.weight).flatten(1))


def test_subclasses_with_own_forward_and_parameters_used_without_a_rule_are_unsupported():
    with pytest.raises(UnsupportedModelError, match=r"1 \(OverriddenConv\)"):
        LRP(nn.Sequential(nn.Conv2d(1, 1, 1), OverriddenConv(1, 1, 1)))
    with pytest.raises(UnsupportedModelError, match=r"<model> \(functional conv1d\)"):
        LRP(FunctionalParameter())(torch.rand(3, 1, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(UnsupportedModelError, match="without running statistics"):
        LRP(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.BatchNorm1d(4, track_running_stats=False)))


def test_model_is_untouched_after_unsupported_model_error():
    model = Transformerish()
    before = snapshot(model)
    with pytest.raises(UnsupportedModelError):
        LRP(model)
    for key, value in model.state_dict().items():
        assert torch.equal(before[key], value)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert isinstance(model.norm, nn.GroupNorm) and isinstance(model.encoder[0].rnn, nn.LSTM)


def test_concurrent_explanations_equal_sequential_ones():
    model = small_cnn()
    explainer = LRP(model)
    inputs = [images(seed=s) for s in range(4)]
    expected = [explainer(x, targets()) for x in inputs]
    results: dict[int, list[torch.Tensor]] = {}

    def work(i: int) -> None:
        results[i] = [explainer(inputs[(i + k) % 4], targets()) for k in range(8)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, outputs in results.items():
        for k, relevance in enumerate(outputs):
            assert torch.equal(relevance, expected[(i + k) % 4])


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_alpha2_beta1_flat", "epsilon_gamma_box"])
def test_in_place_activations_negative_activations_and_zero_bias_agree_with_zennit(composite):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3), nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4 * 10 * 10, 3),
    )  # fmt: skip
    x, t = images(size=16) - 0.5, torch.zeros(6, dtype=torch.long)
    options = {"low": -0.5, "high": 0.5} if composite == "epsilon_gamma_box" else {}
    relevance = LRP(model, composite, zero_bias=True, **options)(x, t)
    assert torch.isfinite(relevance).all()
    pytest.importorskip("zennit")
    from zennit.attribution import Gradient as ZennitGradient
    from zennit.composites import EpsilonAlpha2Beta1Flat, EpsilonGammaBox, EpsilonPlusFlat

    reference_composite = {
        "epsilon_plus_flat": EpsilonPlusFlat,
        "epsilon_alpha2_beta1_flat": EpsilonAlpha2Beta1Flat,
        "epsilon_gamma_box": lambda **kw: EpsilonGammaBox(low=-0.5, high=0.5, **kw),
    }[composite](zero_params="bias")
    with ZennitGradient(model, reference_composite) as attributor:
        _, reference = attributor(x.clone().requires_grad_(), lambda out: out * nn.functional.one_hot(t, 3))
    assert relative_l2(relevance, reference) <= 1e-3


def test_epsilon_gamma_box_requires_bounds_and_unknown_composite_is_rejected():
    with pytest.raises(ValueError, match="low= and high="):
        LRP(small_cnn(), "epsilon_gamma_box")
    with pytest.raises(ValueError, match="composite='nope'"):
        LRP(small_cnn(), "nope")
    with pytest.raises(ValueError, match="low/high only apply"):
        LRP(small_cnn(), low=0.0, high=1.0)


class Gated(nn.Module):
    """Forward code exponentiates an input-dependent tensor: no LRP rule."""

    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Linear(4, 4)
        self.gate = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.value(x) * torch.exp(self.gate(x)))


class Residual(nn.Module):
    """Functional ReLU, residual addition, mean pooling and scaling: all explained by their gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.head = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        a = nn.functional.relu(self.conv1(x))
        a = a + 0.5 * self.conv2(a)
        return self.head(torch.flatten(a.mean((2, 3)), 1))


class Misordered(nn.Module):
    """Registers the head before the layer that reads the input."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 2)
        self.body = nn.Linear(4, 8)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


class NotFed(nn.Module):
    """A BatchNorm registered right after a Linear that does not read its output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.bn(x) + self.fc(x))


def test_forward_code_without_lrp_rule_is_reported_at_first_call():
    explainer = LRP(Gated())
    with pytest.raises(UnsupportedModelError, match=r"<model> \(functional exp\)"):
        explainer(torch.rand(3, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(UnsupportedModelError):  # and again: never silently falls back later
        explainer(torch.rand(3, 4), torch.zeros(3, dtype=torch.long))


def test_softmax_output_is_reported():
    model = nn.Sequential(nn.Linear(4, 3))
    model.register_module("softmax", nn.Softmax(dim=1))
    with pytest.raises(UnsupportedModelError, match=r"softmax \(Softmax\)"):
        LRP(model)


def test_residual_additions_and_linear_functional_code_are_supported_and_conservative():
    model = Residual()
    x, t = images(size=8), targets(classes=3)
    relevance = LRP(model)(x, t)
    logit = model(x).gather(1, t[:, None])[:, 0].detach()
    assert torch.allclose(relevance.sum((1, 2, 3)), logit, rtol=1e-2, atol=1e-6)


def test_first_layer_is_the_first_to_run_not_the_first_registered():
    model = Misordered()
    x, t = torch.rand(3, 4), torch.zeros(3, dtype=torch.long)
    reordered = nn.Sequential(model.body, nn.ReLU(), model.head)  # same layers, registration = execution order
    assert torch.allclose(LRP(model)(x, t), LRP(reordered)(x, t))


def test_the_first_layer_must_be_the_only_reader_of_the_input():
    with pytest.raises(UnsupportedModelError, match=r"bn \(BatchNorm1d reads the model input besides fc\)"):
        LRP(NotFed().eval())(torch.rand(2, 4), torch.zeros(2, dtype=torch.long))


class NormFirst(nn.Module):
    """Registers the BatchNorm before the convolution it normalizes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.bn = nn.BatchNorm2d(4)
        self.conv0 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        a = torch.relu(self.conv0(x))
        return self.head(torch.relu(self.bn(self.conv1(a))).flatten(1))


class PreActivation(nn.Module):
    """DenseNet-style: a BatchNorm registered right after a convolution reads a concatenation."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv0 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)  # registration order would fold it into conv1
        self.head = nn.Linear(8 * 8 * 8, 3, bias=False)

    def forward(self, x):
        a = self.conv0(x)
        features = self.conv1(a) + torch.cat([a, a], dim=1)
        return self.head(torch.relu(self.bn(features)).flatten(1))


def test_batch_norms_are_folded_by_data_flow_not_registration_order():
    model = randomize_batch_norms(NormFirst())
    x, t = images(size=8), targets(classes=3)
    ordered = nn.Sequential(model.conv0, nn.ReLU(), model.conv1, model.bn, nn.ReLU(), nn.Flatten(), model.head)
    assert torch.allclose(LRP(model)(x, t), LRP(ordered)(x, t), atol=1e-6)
    pytest.importorskip("zennit")
    from zennit.attribution import Gradient as ZennitGradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat

    with ZennitGradient(ordered, EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])) as attributor:
        _, reference = attributor(x.clone().requires_grad_(), lambda out: out * nn.functional.one_hot(t, 3))
    assert relative_l2(LRP(model)(x, t), reference) <= 1e-3


def test_batch_norm_reading_a_concatenation_is_not_folded_and_relevance_is_conserved():
    model = randomize_batch_norms(PreActivation())
    x = images(size=8)
    with torch.no_grad():
        t = model(x).argmax(1)
        logit = model(x).gather(1, t[:, None])[:, 0]
    relevance = LRP(model, zero_bias=True)(x, t)
    assert torch.allclose(relevance.sum((1, 2, 3)), logit, rtol=1e-3, atol=1e-6)
    assert relative_l2(LRP(model)(x, t), LRP(model, zero_bias=True)(x, t)) > 1e-3  # biases do matter here


def test_failed_call_leaves_model_and_explainer_usable():
    model = small_cnn()
    before = snapshot(model)
    x, t = images(), targets()
    with torch.no_grad():
        out = model(x)
    explainer = LRP(model)
    with pytest.raises(RuntimeError):
        explainer(torch.rand(2, 3, 16, 16), targets(2))  # wrong number of channels: fails inside the forward
    with pytest.raises(ValueError, match="target"):
        explainer(x, targets(3))
    assert_untouched(model, before, x, out)
    assert torch.equal(explainer(x, t), LRP(model)(x, t))


def test_explainer_survives_pickling_before_and_after_its_first_call_and_empty_batches():
    import pickle

    explainer = LRP(small_cnn(), composite="epsilon_alpha2_beta1_flat")
    x, t = images(), targets()
    fresh = pickle.loads(pickle.dumps(explainer))  # as sent to Dask workers: prepared at the first call there
    expected = explainer(x, t)
    prepared = pickle.loads(pickle.dumps(explainer))
    assert torch.equal(fresh(x, t), expected) and torch.equal(prepared(x, t), expected)
    assert prepared(x[:0], t[:0]).shape == (0, 1, 16, 16)
    assert LRP(small_cnn())(x[:0], t[:0]).shape == (0, 1, 16, 16)  # also as the very first call


def test_failed_canonization_leaves_the_model_bit_identical(monkeypatch):
    from unhans.explainers import canonizers

    model = bn_cnn()
    x, t = images(channels=3), targets(classes=5)
    before = snapshot(model)
    with torch.no_grad():
        out = model(x)
    folded = []

    def fail_on_second(layer, norm):
        if folded:
            raise RuntimeError("simulated failure halfway through canonization")
        folded.append(layer)
        original(layer, norm)

    original = canonizers._fold
    monkeypatch.setattr(canonizers, "_fold", fail_on_second)
    explainer = LRP(model)
    with pytest.raises(RuntimeError, match="preparing the LRP model failed"):
        explainer(x, t)
    assert folded  # it did fail halfway
    assert_untouched(model, before, x, out)
    with pytest.raises(RuntimeError, match="failed to prepare"):  # a half-rewritten copy is never used
        explainer(x, t)
    monkeypatch.setattr(canonizers, "_fold", original)
    assert torch.isfinite(LRP(model)(x, t)).all()
    assert_untouched(model, before, x, out)


class SoftmaxHead(nn.Module):
    """Foldable Conv+BatchNorm, then forward code without an LRP rule."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 14 * 14, 3)

    def forward(self, x):
        return torch.softmax(self.head(self.bn(self.conv(x)).flatten(1)), dim=1)


def test_model_is_untouched_when_its_forward_code_is_rejected():
    model = randomize_batch_norms(SoftmaxHead())
    x = images(channels=3)
    before = snapshot(model)
    with torch.no_grad():
        out = model(x)
    with pytest.raises(UnsupportedModelError, match=r"<model> \(functional softmax\)"):
        LRP(model)(x, targets(classes=3))
    assert_untouched(model, before, x, out)


def test_runs_under_cpu_autocast_bfloat16():
    model, x, t = bn_cnn(), images(channels=3) - 0.5, targets(classes=5)
    explainer = LRP(model)
    reference = explainer(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        relevance = explainer(x, t)
    assert relevance.dtype == torch.float32 and relevance.shape == x.shape
    assert torch.isfinite(relevance).all()
    assert relative_l2(relevance, reference) < 0.05  # bfloat16 keeps 8 bits of mantissa


class SqueezeExcite(nn.Module):
    """features ⊙ hardsigmoid(fc(mean(features))): the gate is a constant weight for LRP."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        return x * self.gate(self.fc(self.pool(x)))


def test_squeeze_excitation_gates_are_constant_weights():
    torch.manual_seed(5)
    features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    model = nn.Sequential(features, SqueezeExcite(4), nn.Flatten(), nn.Linear(4 * 8 * 8, 3, bias=False))
    x, t = images(size=8), targets(classes=3)
    relevance = LRP(model)(x, t)
    # the same network with the gate values frozen into a fixed per-sample channel scaling
    with torch.no_grad():
        gate = model[1].gate(model[1].fc(model[1].pool(features(x))))
    expected = torch.cat([
        LRP(nn.Sequential(features, Scale(gate[i : i + 1]), nn.Flatten(), model[3]))(x[i : i + 1], t[i : i + 1])
        for i in range(len(x))
    ])  # fmt: skip
    assert torch.allclose(relevance, expected, rtol=1e-4, atol=1e-7)
    with torch.no_grad():
        logit = model(x).gather(1, t[:, None])[:, 0]
    assert torch.allclose(LRP(model, zero_bias=True)(x, t).sum((1, 2, 3)), logit, rtol=1e-3, atol=1e-6)


class Scale(nn.Module):
    """Multiplies by a constant: forward code around a child, explained by its gradient."""

    def __init__(self, factor: torch.Tensor) -> None:
        super().__init__()
        self.inner = nn.Identity()
        self.register_buffer("factor", factor)

    def forward(self, x):
        return self.inner(x) * self.factor


def test_a_sigmoid_used_as_gate_and_as_activation_is_reported():
    class Both(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.sigmoid = nn.Sigmoid()
            self.head = nn.Linear(2 * 6 * 6, 2)

        def forward(self, x):
            a = self.conv(x)
            return self.head((self.sigmoid(a) * a + self.sigmoid(a)).flatten(1))

    with pytest.raises(UnsupportedModelError, match="used both as a gate and as an activation"):
        LRP(Both())(images(size=8), targets(classes=2))


def vgg_like() -> nn.Module:
    """Features → AdaptiveAvgPool2d((4, 4)) → flatten → classifier, like torchvision VGG (which pools to 7×7)."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(3)
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            )  # fmt: skip
            self.avgpool = nn.AdaptiveAvgPool2d((4, 4))
            self.classifier = nn.Sequential(nn.Linear(8 * 16, 24), nn.ReLU(), nn.Dropout(), nn.Linear(24, 5))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return Net().eval()


def test_enlarging_average_pooling_is_merged_into_the_linear_layer_without_changing_relevance(monkeypatch):
    from unhans.explainers import lrp as lrp_module
    model = vgg_like()
    small, large = images(4, channels=3, size=8, seed=1), images(3, channels=3, size=24, seed=2)
    merged = LRP(model)
    at_small, at_large = merged(small, targets(4, 5)), merged(large, targets(3, 5))
    # 8×8 inputs give 2×2 maps pooled up to 4×4: merged (a 32-input layer, one copy for that shape);
    # 24×24 inputs give 6×6 maps pooled down: nothing merged, one copy for every other shape
    linear_inputs = {key: prepared.copies.get(small).get_submodule("0.classifier.0").layer.in_features
                     for key, prepared in merged._prepared.items()}  # fmt: skip
    assert linear_inputs == {(3, 8, 8): 8 * 2 * 2, None: 8 * 16}
    monkeypatch.setattr(lrp_module, "_FOLD_POOLS", False)
    plain = LRP(model)
    assert relative_l2(at_small, plain(small, targets(4, 5))) < 1e-5
    assert relative_l2(at_large, plain(large, targets(3, 5))) < 1e-5
    assert relative_l2(merged(small, targets(4, 5)), at_small) == 0.0  # the merged copy is reused


def test_copies_prepared_per_input_shape_are_bounded(monkeypatch):
    from unhans.explainers import lrp as lrp_module
    monkeypatch.setattr(lrp_module, "_MAX_SHAPES", 2)
    explainer = LRP(vgg_like())
    sizes = [4, 8, 12, 4]  # feature maps 1x1, 2x2, 3x3: each pooled up to 4x4, each merged for its shape
    results = [explainer(images(2, channels=3, size=size, seed=size), targets(2, 5)) for size in sizes]
    assert len(explainer._prepared) == 2  # 12 and the re-prepared 4; 8 was dropped
    assert torch.equal(results[-1], results[0])  # a dropped shape is prepared again, identically


class _PoolThenLinear(nn.Module):
    """Conv features (2×2 maps at 8×8 inputs) → AdaptiveAvgPool2d(4) → a reshape → Linear, the reshape varying."""

    def __init__(self, reshape: str) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.reshape = reshape
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4))
        self.avgpool = nn.AdaptiveAvgPool2d(4)
        width = 6 if reshape == "split" else 8
        self.fc = nn.Linear(width * 16, 5)

    def forward(self, x):
        f = self.features(x)
        if self.reshape == "fixed":  # batch-independent sizes written out
            return self.fc(self.avgpool(f).view(-1, 8 * 16))
        if self.reshape == "transposed":  # a non-contiguous pooling input, then .view
            return self.fc(self.avgpool(f.transpose(2, 3)).view(f.shape[0], -1))
        _, second = torch.split(f, [2, 6], dim=1)  # the pooling reads the second (larger) output of a split
        return self.fc(torch.flatten(self.avgpool(second), 1))


@pytest.mark.parametrize("reshape", ["fixed", "transposed", "split"])
def test_pooling_merge_is_checked_and_skipped_when_the_forward_code_does_not_allow_it(reshape, monkeypatch):
    from unhans.explainers import lrp as lrp_module
    model = _PoolThenLinear(reshape).eval()
    x, t = images(3, channels=3, size=8, seed=7), targets(3, 5)
    explainer = LRP(model)
    merged = explainer(x, t)
    assert list(explainer._prepared) == ([(3, 8, 8)] if reshape == "split" else [None])  # merged only where valid
    monkeypatch.setattr(lrp_module, "_FOLD_POOLS", False)
    assert relative_l2(merged, LRP(model)(x, t)) < 1e-5


def _concept_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1, bias=False),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3, bias=False))


def test_concept_relevance_sums_to_the_logit_and_leaves_the_heatmap_unchanged():
    explainer = LRP(_concept_net(), zero_bias=True)
    assert explainer.concept_layer == "2"  # the last convolution
    x = torch.rand(5, 1, 8, 8)
    with_concepts, concepts = explainer.explain_with_concepts(x)
    plain = explainer.explain(x)
    assert concepts.shape == (5, 6)
    torch.testing.assert_close(with_concepts.relevance, plain.relevance)
    logit = with_concepts.logits.gather(1, with_concepts.target[:, None]).squeeze(1)
    # bias-free: the z+ layers below pass on exactly what the hidden layer holds; the ε of the
    # linear layer above takes a share of order ε / |z| of the logit, nothing more
    concept_sum, input_sum = concepts.sum(1), with_concepts.relevance.sum((1, 2, 3))
    torch.testing.assert_close(concept_sum, input_sum, rtol=1e-3, atol=0.0)  # measured 1.1e-5 (AVX-512, AVX2)
    torch.testing.assert_close(concept_sum, logit, rtol=0.05, atol=0.0)


def test_concept_relevance_does_not_depend_on_where_the_pattern_sits():
    explainer = LRP(_concept_net())
    blob = torch.rand(3, 3)
    x = torch.zeros(2, 1, 16, 16)
    x[0, 0, 2:5, 3:6] = blob      # the same pattern at two places, away from the border
    x[1, 0, 9:12, 10:13] = blob
    ex, concepts = explainer.explain_with_concepts(x, torch.tensor([1, 1]))
    torch.testing.assert_close(concepts[0], concepts[1], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(ex.relevance[0], ex.relevance[1])  # while the heatmaps move with it


def test_a_concept_layer_that_is_not_in_the_model_is_named():
    with pytest.raises(ValueError, match="features.9"):
        LRP(_concept_net(), concept_layer="features.9")
    explainer = LRP(_concept_net(), concept_layer="0")
    assert explainer.explain_with_concepts(torch.rand(2, 1, 8, 8))[1].shape == (2, 4)


def test_conditional_heatmaps_of_a_partition_of_a_layers_channels_add_up_to_the_heatmap():
    import torch.nn as nn

    from unhans.explainers import LRP

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 16, 3)).eval()
    x = torch.rand(5, 1, 8, 8)
    lrp = LRP(model)
    full = lrp.explain(x).relevance
    first = lrp.explain_conditional(x, "2", [0, 1, 2]).relevance
    second = lrp.explain_conditional(x, "2", [3, 4, 5]).relevance
    torch.testing.assert_close(first + second, full, rtol=1e-4, atol=1e-6)
    assert first.abs().sum() > 0 and second.abs().sum() > 0 and not torch.allclose(first, full)
    # one channel's map is the relevance that passes through that channel alone
    alone = sum(lrp.explain_conditional(x, "2", [c]).relevance for c in range(6))
    torch.testing.assert_close(alone, full, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        lrp.explain_conditional(x, "2", [6])
    with pytest.raises(ValueError, match="not a module"):
        lrp.explain_conditional(x, "nope", [0])


def test_explain_observing_gives_the_layers_output_from_the_explanations_own_forward_pass():
    import torch.nn as nn

    from unhans.explainers import LRP

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(6 * 64, 3)).eval()
    x = torch.rand(5, 1, 8, 8)
    lrp = LRP(model)
    explained, seen = lrp.explain_observing(x, "2")
    torch.testing.assert_close(explained.relevance, lrp.explain(x).relevance)
    (hidden,) = seen
    torch.testing.assert_close(hidden, model[2](model[1](model[0](x))))
    assert not hidden.requires_grad
    with pytest.raises(ValueError, match="not a module"):
        lrp.explain_observing(x, "nope")
