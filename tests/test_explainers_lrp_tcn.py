"""LRP through a temporal convolutional network (seed 004's TCN; Bai et al. 2018): dilated causal
Conv1d with padding, the usual ``Chomp1d`` or an explicit left pad, residual additions, and a 1×1
down-sampling convolution that reads the model input beside the first convolution."""
import copy

import pytest
import torch
from torch import nn

from unhans.explainers import LRP, UnsupportedModelError


class Chomp1d(nn.Module):
    """Drops the last ``size`` steps: with padding (k-1)·d on both sides, the convolution is causal."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x):
        return x[:, :, :-self.size].contiguous()


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, dilation: int, chomp: bool):
        super().__init__()
        pad = 2 * dilation
        if chomp:
            self.net = nn.Sequential(nn.Conv1d(c_in, c_out, 3, padding=pad, dilation=dilation), Chomp1d(pad), nn.ReLU(),
                                     nn.Conv1d(c_out, c_out, 3, padding=pad, dilation=dilation), Chomp1d(pad), nn.ReLU())
        else:
            self.net = nn.Sequential(nn.ConstantPad1d((pad, 0), 0.0), nn.Conv1d(c_in, c_out, 3, dilation=dilation), nn.ReLU(),
                                     nn.ConstantPad1d((pad, 0), 0.0), nn.Conv1d(c_out, c_out, 3, dilation=dilation), nn.ReLU())
        self.downsample = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None
        self.relu = nn.ReLU()
        self.summed = None  # the reference's zennit.layer.Sum: zennit needs the addition as a layer

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        if self.summed is not None:
            return self.relu(self.summed(torch.stack([self.net(x), skip], dim=-1)))
        return self.relu(self.net(x) + skip)


def tcn(chomp: bool, features: int = 5, classes: int = 3, bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(Block(features, 8, 1, chomp), Block(8, 8, 2, chomp), Block(8, 8, 4, chomp),
                          nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, classes))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv1d, nn.Linear)):
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1 if bias else 0.0)
    return model.eval()


def series(batch: int = 4, features: int = 5, steps: int = 24) -> torch.Tensor:
    return torch.randn(batch, features, steps, generator=torch.Generator().manual_seed(2))


def relative_l2(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("chomp", [True, False], ids=["chomp1d", "constant_pad"])
def test_tcn_agrees_with_zennit_with_the_first_layer_rule_on_every_reader_of_the_input(chomp):
    pytest.importorskip("zennit")
    from zennit.attribution import Gradient as ZennitGradient
    from zennit.composites import EpsilonPlusFlat, MixedComposite, NameMapComposite
    from zennit.layer import Sum
    from zennit.rules import Flat

    model, x = tcn(chomp), series()
    t = torch.tensor([0, 1, 2, 1])
    # zennit passes relevance itself backwards, so a residual "+" in forward code would hand each branch the
    # whole relevance: its reference runs on a copy with the additions as zennit Sum layers (Norm rule), the
    # same function. zennit gives Flat to the first layer in registration order; the down-sampling 1x1 conv
    # reads the input too, so it gets Flat by name.
    reference_model = copy.deepcopy(model)
    for block in reference_model.modules():
        if isinstance(block, Block):
            block.summed = Sum(dim=-1)
    reference_composite = MixedComposite([NameMapComposite([(["0.downsample"], Flat())]), EpsilonPlusFlat()])
    with ZennitGradient(reference_model, reference_composite) as attributor:
        _, reference = attributor(x.clone().requires_grad_(), lambda out: out * nn.functional.one_hot(t, 3))
    relevance = LRP(model)(x, t)
    assert relevance.shape == x.shape
    assert relative_l2(relevance, reference) <= 1e-3


def test_tcn_relevance_is_conserved_without_biases():
    """(Chomp1d: the convolutions pad internally. An explicit pad before the first layer would get
    its Flat share of relevance too: the padded positions are inputs of that layer.)"""
    model, x = tcn(True, bias=False), series()
    t = torch.tensor([2, 0, 1, 1])
    with torch.no_grad():
        logit = model(x).gather(1, t[:, None])[:, 0]
    relevance = LRP(model, zero_bias=True)(x, t)
    torch.testing.assert_close(relevance.sum((1, 2)), logit, rtol=1e-3, atol=1e-6)


def test_an_unknown_operation_in_a_parameterless_module_is_still_refused():
    class Squash(nn.Module):
        def forward(self, x):
            return torch.exp(x)

    model = nn.Sequential(nn.Conv1d(5, 4, 3), Squash(), nn.Flatten(), nn.Linear(4 * 22, 3))
    with pytest.raises(UnsupportedModelError, match="exp"):
        LRP(model)(series(), torch.zeros(4, dtype=torch.long))


def test_an_input_read_by_a_residual_addition_is_refused():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(5, 5, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x)

    model = nn.Sequential(Residual(), nn.Flatten(), nn.Linear(5 * 24, 3))
    with pytest.raises(UnsupportedModelError, match="reads the model input"):
        LRP(model)(series(), torch.zeros(4, dtype=torch.long))


def test_an_lstm_is_refused_by_lrp_and_explained_by_the_gradient_family():
    from unhans.explainers import Gradient, TemporalSaliencyRescaling

    class LSTMClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(5, 8, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):  # (B, features, time)
            out, _ = self.lstm(x.transpose(1, 2))
            return self.head(out[:, -1])

    model, x = LSTMClassifier().eval(), series()
    with pytest.raises(UnsupportedModelError, match="lstm"):
        LRP(model)(x, torch.zeros(4, dtype=torch.long))
    relevance = TemporalSaliencyRescaling(Gradient(model), alpha=0.5)(x, torch.zeros(4, dtype=torch.long))
    assert relevance.shape == x.shape and torch.isfinite(relevance).all() and relevance.abs().sum() > 0
