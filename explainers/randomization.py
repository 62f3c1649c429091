"""Model-parameter randomization: do the heatmaps depend on what the model learned?

The sanity check of Adebayo et al. (2018) (seed 002): re-initialize the model's layers one after
the other, from the output down ("cascading", ``top_down``), explain the same inputs with each
partly random model and compare with the trained model's explanations. An explanation that
stays the same while the weights become noise describes the input, not the model.

Layers are the modules with ``reset_parameters`` in ``named_modules()`` order (convolutions,
linear layers, norms); each is re-initialized by its own ``reset_parameters`` under
``torch.manual_seed(seed + 1)``, which is what Quantus's ``MPRT`` does, so the randomized models
are the same as Quantus's for the same seed. The caller's global random state is left as it was.

Similarity: Spearman's rank correlation of the absolute explanations (ties get their average
rank, as in ``scipy.stats.spearmanr``), batched on the explanations' device.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

LAYER_ORDERS = ("top_down", "bottom_up", "independent")


def randomizable_layers(model: nn.Module) -> list[str]:
    """Names of the modules a randomization test re-initializes, in ``named_modules()`` order."""
    return [name for name, module in model.named_modules() if hasattr(module, "reset_parameters")]


def randomized_models(model: nn.Module, order: str = "top_down", seed: int = 42) -> Iterator[tuple[str, nn.Module]]:
    """Yield (layer name, model copy) with one more layer re-initialized each time (``independent``: only that one).

    The copy is one object, changed in place from one step to the next (as in Quantus): use it before
    asking for the next. ``model`` itself is never touched.
    """
    if order not in LAYER_ORDERS:
        raise ValueError(f"order={order!r} is not one of {', '.join(LAYER_ORDERS)}")
    randomized = copy.deepcopy(model).eval()
    original = copy.deepcopy(randomized.state_dict())
    layers = [(name, m) for name, m in randomized.named_modules() if hasattr(m, "reset_parameters")]
    if not layers:
        raise ValueError("the model has no layer with parameters to randomize (no module has reset_parameters)")
    if order == "top_down":
        layers = layers[::-1]
    devices = sorted({p.device.index for p in randomized.parameters() if p.device.type == "cuda"})
    for name, module in layers:
        if order == "independent":
            randomized.load_state_dict(original)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed + 1)
            module.reset_parameters()
        yield name, randomized


def average_ranks(values: Tensor) -> Tensor:
    """Ranks 1..F along the last axis of (B, F), ties sharing their average rank (as scipy's ``rankdata``)."""
    b, f = values.shape
    sorted_values, order = torch.sort(values, dim=1, stable=True)
    new_group = torch.ones_like(sorted_values, dtype=torch.bool)
    new_group[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    group = torch.cumsum(new_group.long(), dim=1) - 1 + torch.arange(b, device=values.device)[:, None] * f
    position = torch.arange(f, device=values.device, dtype=torch.float64).expand(b, f).reshape(-1)
    flat_group = group.reshape(-1)
    first = torch.full((b * f,), float(f), dtype=torch.float64, device=values.device).scatter_reduce(
        0, flat_group, position, reduce="amin")
    last = torch.zeros(b * f, dtype=torch.float64, device=values.device).scatter_reduce(
        0, flat_group, position, reduce="amax")
    mean_rank = ((first + last) / 2 + 1)[flat_group].view(b, f)
    ranks = torch.empty_like(mean_rank)
    ranks.scatter_(1, order, mean_rank)
    return ranks


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Per-row Spearman rank correlation of (B, ...) and (B, ...) (flattened per sample); NaN for a constant row."""
    ra, rb = average_ranks(a.flatten(1).double()), average_ranks(b.flatten(1).double())
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / torch.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))


@dataclass
class RandomizationResult:
    """Similarity of each sample's explanation before and after randomizing up to each layer.

    layers: the randomized layer at each step (cascading: every layer up to it is random);
    similarity: (steps, B) Spearman correlations of the absolute explanations.
    """

    layers: list[str]
    similarity: Tensor

    def median_curve(self) -> list[float]:
        return [float(v) for v in self.similarity.nanmedian(1).values]


def parameter_randomization(
    model: nn.Module, explain: Callable[[nn.Module, Tensor, Tensor], Tensor], x: Tensor, target: Tensor, *,
    order: str = "top_down", seed: int = 42, absolute: bool = True, batch_size: int = 256,
    reference: Tensor | None = None,
) -> RandomizationResult:
    """The randomization test: ``explain(model, x, target) -> relevance like x`` for the trained model and each
    randomized one (:func:`randomized_models`), compared per sample with :func:`spearman`.

    ``explain`` must build its explainer for the model it gets (the randomized copies change in place).
    Explanations are computed ``batch_size`` samples at a time; ``reference``: the trained model's
    explanations when they are at hand already.
    """
    def prepared(out: Tensor) -> Tensor:
        out = out.detach().flatten(1).float()
        return out.abs() if absolute else out

    def explained(m: nn.Module) -> Tensor:
        return prepared(torch.cat([explain(m, x[i:i + batch_size], target[i:i + batch_size])
                                   for i in range(0, len(x), batch_size)]))

    reference = explained(model) if reference is None else prepared(reference)
    layers, rows = [], []
    for name, randomized in randomized_models(model, order=order, seed=seed):
        layers.append(name)
        rows.append(spearman(reference, explained(randomized)))
    return RandomizationResult(layers, torch.stack(rows))
