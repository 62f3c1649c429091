"""Small classifiers for the seed-004 time-series benchmark (issue #15): a TCN and an LSTM.

Both read (B, F, T) — features as channels, time last, the layout of
``benchmarks/time_series_data.py`` and of the explainers — and return logits (B, classes).

- :class:`TCN`: residual blocks of two dilated *causal* Conv1d (left zero-padding), ReLU,
  dilation 1, 2, 4, …; a 1×1 Conv1d on the skip path where the width changes; global max
  pooling over time, then a Linear. Built only from layers the LRP engine knows (Conv1d, ReLU,
  ``F.pad``, additions, max pooling, Linear), without weight norm or dropout. The authors' TCN
  (``ayaabdelsalam91/TS-Interpretability-Benchmark``, ``Scripts/Models/TCN.py``; Bai et al.
  2018) has the same structure with weight norm, dropout, Chomp1d slicing and a softmax output.
- :class:`LSTMClassifier`: one LSTM layer over time, its last hidden state → Linear (as the
  repo's ``Scripts/Models/LSTM.py``, without the softmax).

:func:`train` fits either with Adam and cross-entropy on the raw data (the repo min-max scales
first; not needed here).

    python benchmarks/time_series_models.py                   # TCN on middle and moving box, LSTM on middle
    flock /tmp/bench.lock python benchmarks/time_series_models.py --models tcn lstm --datasets middle moving_middle

Prints test accuracy and training time per (model, dataset).
"""
from __future__ import annotations

import argparse
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TemporalBlock(nn.Module):
    """``relu(conv2(relu(conv1(x))) + skip(x))`` with causal dilated convolutions (output length = input's)."""

    def __init__(self, n_in: int, n_out: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.padding = (kernel_size - 1) * dilation
        self.conv1 = nn.Conv1d(n_in, n_out, kernel_size, dilation=dilation)
        self.conv2 = nn.Conv1d(n_out, n_out, kernel_size, dilation=dilation)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        self.downsample = nn.Conv1d(n_in, n_out, 1) if n_in != n_out else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.conv1(F.pad(x, (self.padding, 0))))
        out = self.conv2(F.pad(out, (self.padding, 0)))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + skip)


class TCN(nn.Module):
    """Temporal convolutional network for (B, F, T) inputs → (B, classes) logits."""

    def __init__(self, n_features: int = 50, n_classes: int = 2, channels: Sequence[int] = (16, 16, 16),
                 kernel_size: int = 3) -> None:
        super().__init__()
        widths = [n_features, *channels]
        self.blocks = nn.Sequential(*(TemporalBlock(widths[i], widths[i + 1], kernel_size, 2**i)
                                      for i in range(len(channels))))
        self.pool = nn.AdaptiveMaxPool1d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[-1], n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.pool(self.blocks(x))))


class LSTMClassifier(nn.Module):
    """One LSTM layer over the time axis of (B, F, T) inputs; last hidden state → Linear logits."""

    def __init__(self, n_features: int = 50, n_classes: int = 2, hidden_size: int = 32) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden_size, batch_first=True)
        self.fc = nn.Linear(hidden_size, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        output, _ = self.lstm(x.transpose(1, 2))  # (B, T, hidden)
        return self.fc(output[:, -1])


def make_model(kind: str, n_features: int = 50, n_classes: int = 2, seed: int = 0, **options) -> nn.Module:
    """``"tcn"`` or ``"lstm"``, initialised from ``torch.manual_seed(seed)`` (the global RNG is restored)."""
    builders = {"tcn": TCN, "lstm": LSTMClassifier}
    if kind not in builders:
        raise ValueError(f"unknown model {kind!r}; known: {sorted(builders)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builders[kind](n_features, n_classes, **options)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def accuracy(model: nn.Module, x, y, batch_size: int = 1024) -> float:
    """Fraction of ``x`` (n, F, T) classified as ``y``, on the model's device, in eval mode (restored after)."""
    device = _device(model)
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size].to(device))
        correct += int((logits.argmax(1) == y[start:start + batch_size].to(device)).sum())
    model.train(was_training)
    return correct / max(len(x), 1)


def train(model: nn.Module, x, y, epochs: int = 10, seed: int = 0, lr: float = 3e-3, batch_size: int = 64,
          weight_decay: float = 0.0) -> nn.Module:
    """Fit ``model`` in place with Adam on cross-entropy; ``x`` (n, F, T), ``y`` (n,) arrays or tensors.

    Runs on the model's device; mini-batch order from ``seed`` (the global RNG is untouched).
    Returns the model, in eval mode.
    """
    device = _device(model)
    x = torch.as_tensor(x, dtype=torch.float32).to(device)
    y = torch.as_tensor(y).long().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    model.train()
    for _ in range(int(epochs)):
        for batch in torch.randperm(len(x), generator=generator).to(device).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["tcn", "lstm"], choices=["tcn", "lstm"])
    parser.add_argument("--datasets", nargs="*", default=["middle", "moving_middle"])
    parser.add_argument("--process", default="gaussian")
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=None, help="default: 10 (tcn), 20 (lstm)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    from time_series_data import make_train_test  # the script's own folder is on sys.path

    torch.set_num_threads(args.threads)
    for kind in args.models:
        epochs = args.epochs or {"tcn": 10, "lstm": 20}[kind]
        for name in args.datasets:
            train_set, test_set = make_train_test(name, args.process, args.n_train, args.n_test, args.seed)
            model = make_model(kind, seed=args.seed)
            start = time.perf_counter()
            train(model, train_set.x, train_set.y, epochs=epochs, seed=args.seed)
            took = time.perf_counter() - start
            print(f"{kind:<5} {name:<16} {args.process:<10} epochs {epochs:>3} "
                  f"train acc {accuracy(model, train_set.x, train_set.y):.3f} "
                  f"test acc {accuracy(model, test_set.x, test_set.y):.3f} ({took:.1f} s, "
                  f"{sum(p.numel() for p in model.parameters())} parameters)", flush=True)


if __name__ == "__main__":
    main()
