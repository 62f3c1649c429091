"""mislabel_score separates flipped labels when recorded while training a small model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from unhans.spray.dynamics import DynamicsRecorder

N, K, DIM, NOISE, EPOCHS, BATCH = 600, 4, 8, 0.1, 12, 32


def auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUROC for untied scores (importing scikit-learn alone takes seconds)."""
    ranks = np.empty(len(score))
    ranks[np.argsort(score)] = np.arange(1, len(score) + 1)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


pytestmark = pytest.mark.usefixtures("single_thread")


def noisy_blobs(asymmetric: bool, seed: int = 0):
    """Gaussian blobs with a fraction NOISE of given labels flipped (to a random other class, or c -> c+1)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, K, N)
    centers = rng.normal(0, 3, (K, DIM))
    x = centers[true] + rng.normal(0, 1, (N, DIM))
    flipped = rng.random(N) < NOISE
    shift = np.ones(N, np.int64) if asymmetric else rng.integers(1, K, N)
    given = np.where(flipped, (true + shift) % K, true)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(given), flipped


@pytest.mark.parametrize("asymmetric", [False, True], ids=["symmetric", "asymmetric"])
def test_mislabel_score_ranks_flipped_labels_first_for_logistic_regression(asymmetric):
    x, y, flipped = noisy_blobs(asymmetric)
    torch.manual_seed(0)
    model = torch.nn.Linear(DIM, K)
    rec = DynamicsRecorder(num_samples=N, num_classes=K)
    g = torch.Generator().manual_seed(0)
    for _ in range(EPOCHS):
        order = torch.randperm(N, generator=g)
        for start in range(0, N, BATCH):
            idx = order[start:start + BATCH]
            logits = model(x[idx])
            loss = torch.nn.functional.cross_entropy(logits, y[idx])
            model.zero_grad()
            loss.backward()
            with torch.no_grad():  # plain SGD, lr 0.1 (torch.optim's first use imports torch._dynamo: seconds)
                for p in model.parameters():
                    p -= 0.1 * p.grad
            rec.update(idx, logits, y[idx])
        rec.end_epoch()
    table = rec.statistics()
    score = table.column("mislabel_score").to_numpy()
    assert auroc(flipped, score) > 0.9
    suspect = table.column("mislabel_suspect").to_numpy(zero_copy_only=False)
    assert suspect[flipped].mean() > 0.8 and suspect[~flipped].mean() < 0.1  # the AUM <= 0 cutoff, uncalibrated
