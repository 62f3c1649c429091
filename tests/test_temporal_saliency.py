"""Temporal Saliency Rescaling (seed 004, Algorithm 1) around real unhans explainers."""
import pytest
import torch
from torch import nn

from unhans.explainers import Gradient, IntegratedGradients, TemporalSaliencyRescaling

F, T = 6, 10


class OneCell(nn.Module):
    """Class 1's logit is x[f, t]² (so its gradient depends on the value), class 0's is 0."""

    def __init__(self, feature: int, step: int):
        super().__init__()
        self.feature, self.step = feature, step

    def forward(self, x):
        v = x[:, self.feature, self.step]
        return torch.stack([torch.zeros_like(v), v * v], 1)


class Recording:
    """A real explainer with a record of every input it was given (what TSR masked)."""

    def __init__(self, base):
        self.base, self.inputs = base, []

    def __call__(self, x, target):
        self.inputs.append(x.detach().clone())
        return self.base(x, target)

    def explain(self, x, target="predicted"):
        self.inputs.append(x.detach().clone())
        return self.base.explain(x, target)


def loop_tsr(base, x, target, alpha, fill):
    """Algorithm 1 as a plain loop over samples, steps and features (the reference)."""
    out = torch.zeros_like(x)
    for b in range(len(x)):
        xb, tb = x[b:b + 1], target[b:b + 1]
        ref = base(xb, tb)
        time = torch.zeros(T)
        for t in range(T):
            masked = xb.clone()
            masked[:, :, t] = fill
            time[t] = (base(masked, tb) - ref).abs().sum()
        time = (time - time.min()) / (time.max() - time.min())
        for t in range(T):
            if time[t] <= alpha:
                continue
            feature = torch.zeros(F)
            for i in range(F):
                masked = xb.clone()
                masked[:, i, t] = fill
                feature[i] = (base(masked, tb) - ref).abs().sum()
            span = feature.max() - feature.min()
            feature = (feature - feature.min()) / span if span > 0 else torch.zeros(F)
            out[b, :, t] = feature * time[t]
    return out


@pytest.mark.parametrize("explainer", [Gradient, lambda m: IntegratedGradients(m, steps=8)])
def test_tsr_puts_the_highest_score_on_the_one_cell_the_model_reads(explainer):
    torch.manual_seed(0)
    x = torch.randn(5, F, T) + 2.0
    tsr = TemporalSaliencyRescaling(explainer(OneCell(3, 7)), alpha=0.5)
    relevance = tsr(x, torch.ones(5, dtype=torch.long))
    assert relevance.shape == x.shape
    assert (relevance.flatten(1).argmax(1) == 3 * T + 7).all()
    assert relevance[:, 3, 7].min() > 0.99  # the kept step's top feature: 1 x 1 after both normalisations


def test_alpha_above_every_time_score_gives_zeros():
    torch.manual_seed(1)
    x = torch.randn(3, F, T)
    model = nn.Sequential(nn.Conv1d(F, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * T, 2))
    tsr = TemporalSaliencyRescaling(Gradient(model), alpha=1.0)
    relevance = tsr(x, torch.zeros(3, dtype=torch.long))
    assert torch.count_nonzero(relevance) == 0
    assert tsr.last_passes == 3 + 3 * T  # no feature pass at all
    assert torch.count_nonzero(TemporalSaliencyRescaling(Gradient(model), alpha=0.0)(x, torch.zeros(3, dtype=torch.long)))


@pytest.mark.parametrize("fill", [0.0, -3.5, torch.arange(F, dtype=torch.float32)[:, None] * 10.0])
def test_masking_writes_the_given_value_and_nothing_else(fill):
    torch.manual_seed(2)
    x = torch.randn(2, F, T)
    recording = Recording(Gradient(OneCell(1, 4)))
    TemporalSaliencyRescaling(recording, alpha=0.5, mask_value=fill, max_batch=7)(x, torch.ones(2, dtype=torch.long))
    expected = torch.as_tensor(fill, dtype=x.dtype).expand(F, T)
    copies = torch.cat(recording.inputs[1:])
    masked_time, masked_cells = 0, 0
    for copy in copies:
        sample = min(range(len(x)), key=lambda b: int((copy != x[b]).sum()))  # the sample it was made from
        changed = copy != x[sample]
        assert torch.equal(copy[changed], expected[changed])  # only the fill went in
        columns = changed.any(0).nonzero().flatten()
        assert len(columns) == 1  # one time step per copy
        masked_time += int(changed.sum()) == F
        masked_cells += int(changed.sum()) == 1
    assert masked_time == 2 * T and masked_cells == len(copies) - 2 * T


def test_batched_tsr_equals_the_per_step_loop_whatever_the_chunk():
    torch.manual_seed(3)
    x = torch.randn(4, F, T)
    model = nn.Sequential(nn.Conv1d(F, 8, 3, padding=2, dilation=2), nn.Tanh(), nn.Conv1d(8, 4, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * T, 3))
    target = torch.tensor([0, 1, 2, 1])
    reference = loop_tsr(Gradient(model), x, target, 0.3, -1.0)
    for chunk in (1, 13, 10_000):
        tsr = TemporalSaliencyRescaling(Gradient(model), alpha=0.3, mask_value=-1.0, max_batch=chunk)
        got = tsr(x, target)
        torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-5)
        kept = int((got.abs().sum(1) > 0).sum())  # steps above alpha with a nonzero feature score
        assert tsr.last_passes >= 4 + 4 * T + F * kept


def test_explain_returns_the_predicted_class_and_logits_of_the_unmasked_input():
    torch.manual_seed(4)
    x = torch.randn(3, F, T)
    model = nn.Sequential(nn.Flatten(), nn.Linear(F * T, 3), nn.Tanh(), nn.Linear(3, 3))
    explanation = TemporalSaliencyRescaling(Gradient(model), alpha=0.2).explain(x)
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(explanation.logits, logits)
    assert torch.equal(explanation.target, logits.argmax(1))
    with pytest.raises(ValueError, match="features, time"):
        TemporalSaliencyRescaling(Gradient(model))(x.reshape(3, 1, F, T), torch.zeros(3, dtype=torch.long))
