"""Train a classifier while recording per-sample training dynamics from the training batches."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import TrainingConfig


@dataclass
class TrainingResult:
    model: "object"
    train_accuracy: float
    test_accuracy: float
    seconds: float


def _accuracy(model, images: np.ndarray, labels: np.ndarray, device: str, batch_size: int = 512) -> float:
    import torch

    correct = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start:start + batch_size]).to(device)
            pred = model(x).argmax(1).cpu().numpy()
            correct += int((pred == labels[start:start + batch_size]).sum())
    return correct / max(1, len(images))


def train_classifier(
    model, images: np.ndarray, labels: np.ndarray, config: TrainingConfig, *, device: str,
    recorder=None, test_images: np.ndarray | None = None, test_labels: np.ndarray | None = None,
    progress: bool = True,
) -> TrainingResult:
    """Train ``model`` in place with Adam on (images, labels), recording dynamics.

    Every epoch visits every sample once in a seeded random order; each training batch's
    logits (before the optimizer step) go to ``recorder.update(ids, logits, labels)``, as in
    Toneva et al. and Pleiss et al., so recording costs no extra forward pass.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model.to(device)
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels.astype(np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    start_time = time.perf_counter()
    n = len(images)
    bar = tqdm(range(config.epochs), desc="train", unit="epoch", disable=not progress, leave=False)
    for _epoch in bar:
        model.train()
        order = torch.randperm(n, generator=generator)
        total_loss = 0.0
        for start in range(0, n, config.batch_size):
            idx = order[start:start + config.batch_size]
            x = x_all[idx].to(device, non_blocking=True)
            y = y_all[idx].to(device, non_blocking=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if recorder is not None:
                recorder.update(idx.to(device), logits.detach(), y)
            total_loss += float(loss.detach()) * len(idx)
        if recorder is not None:
            recorder.end_epoch()
        bar.set_postfix(loss=f"{total_loss / n:.3f}")
    seconds = time.perf_counter() - start_time
    train_acc = _accuracy(model, images, labels, device)
    test_acc = _accuracy(model, test_images, test_labels, device) if test_images is not None else float("nan")
    model.eval()
    return TrainingResult(model=model, train_accuracy=train_acc, test_accuracy=test_acc, seconds=seconds)


def save_checkpoint(model, path: Path) -> None:
    """State dict only (loadable with ``torch.load(..., weights_only=True)``), written atomically."""
    import torch

    from unhans.storage.atomic import write_atomic

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    write_atomic(path, lambda fh: torch.save(state, fh))


def load_checkpoint(model, path: Path, *, trust: bool = False):
    """Load a state dict into ``model``. ``weights_only=True`` unless ``trust`` opts out."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=not trust)
    model.load_state_dict(state)
    model.eval()
    return model
