"""Layer-wise Relevance Propagation with one forward and one backward pass.

The model is deep-copied at construction (never modified) and checked for layers without an LRP
rule. At the first explanation the copy is rewritten, once, into an "LRP-ized" model: the data
flow of one sample is recorded (:mod:`.dataflow`), BatchNorms are folded into the affine layer
they read, average poolings that enlarge their input into the nn.Linear reading them
(:mod:`.canonizers`; such a copy is kept per input shape), and every layer is replaced by the
module of its rule (:mod:`.composites`, :mod:`.rules`). An explanation is then an ordinary autograd backward pass
of the target logit through that copy (seed 003, Appendix B, Algorithm 8): relevance
``R = x ⊙ ∇̂f(x)``, or ``∇̂f(x)`` itself when the first layer's rule (Flat, z^B) already produces
it. The output relevance is the explained logit (``one_hot(target) ⊙ logits``), so for a
bias-free ReLU network ``Σ R = f_target(x)``.

On CPU, 4-d inputs of convolutional models run in the channels-last memory layout, which
oneDNN convolves faster; results are returned in the layout of ``x``.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from contextlib import nullcontext
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .attention_rules import AttnLRPMode
from .canonizers import fold_average_pools, fold_batch_norms
from .composites import COMPOSITES, Composite, make_composite
from .dataflow import trace
from .explanation import PREDICTED, Explanation, check_target, resolve_target
from .snapshot import DeviceCopies, frozen_copy
from .support import check_supported
from .target import check_inputs, target_scores

_CHANNELS_LAST = True  # run 4-d CPU inputs of convolutional models channels-last
_FOLD_POOLS = True  # merge enlarging average poolings into the nn.Linear reading them (see .canonizers)
_MAX_SHAPES = 4  # prepared copies kept for shape-bound merges; older ones are dropped (and rebuilt if needed)


class _Prepared(NamedTuple):
    copies: DeviceCopies  # the LRP-ized model, per device and dtype
    yields_relevance: bool  # the first layer's rule returns relevance as its input gradient
    channels_last: bool  # run inputs channels-last
    attnlrp: bool = False  # run the forward pass in AttnLRPMode (forward code with AttnLRP rules)


def _concept_layer(model: nn.Module, layer: str | None) -> str | None:
    """The module path of the concept layer: ``layer`` checked, or the last convolution for ``"auto"``."""
    if layer is None:
        return None
    if layer == "auto":
        convs = [path for path, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
        return convs[-1] if convs else None
    try:
        model.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"concept_layer={layer!r} is not a module of the model (see model.named_modules())") from None
    return layer


def _masking(condition: tuple[str, list[int]]):
    """A forward hook that lets the backward pass through ``condition``'s channels of the module's output only
    (dimension 1), for this thread's call (the prepared copy may be shared by threads)."""
    layer, keep = condition
    caller = threading.get_ident()

    def hook(_module, _inputs, output):
        if threading.get_ident() != caller:
            return None
        if not isinstance(output, Tensor) or output.ndim < 2:
            raise RuntimeError(f"layer {layer!r} does not give a (batch, channels, ...) tensor")
        if max(keep) >= output.shape[1] or min(keep) < 0:
            raise ValueError(f"channels {keep} out of range for layer {layer!r} with {output.shape[1]} channels")
        mask = torch.zeros(output.shape[1], dtype=output.dtype, device=output.device)
        mask[keep] = 1
        if output.requires_grad:
            output.register_hook(lambda grad: grad * mask.view(1, -1, *([1] * (grad.ndim - 2))))
        return None

    return hook


def _merged_copy(model: nn.Module, flow, pool_folds, sample: Tensor):
    """A copy of ``model`` with ``pool_folds`` merged and ``flow`` pointing into it, or ``None``.

    The merge is checked, not assumed: the copy must give the model's logits on ``sample``
    (twice, as a batch of 2). Forward code that reshapes the pooling's output to fixed sizes,
    or views a non-contiguous pooling input, fails that check, and the model is then prepared
    without merging.
    """
    with torch.inference_mode(False):
        merged = copy.deepcopy(model)
    memo = {id(old): new for old, new in zip(model.modules(), merged.modules())}
    flow = dataclasses.replace(
        flow,
        first=memo.get(id(flow.first)),
        also_first=[memo[id(m)] for m in flow.also_first],
        folds=[(memo[id(a)], memo[id(b)]) for a, b in flow.folds],
        gates=[memo[id(g)] for g in flow.gates],
        relu_fed=[memo[id(m)] for m in flow.relu_fed],
        pool_folds=[(memo[id(a)], memo[id(b)], in_shape) for a, b, in_shape in pool_folds],
    )
    pair = torch.cat([sample, sample])
    try:
        with torch.inference_mode(False), torch.no_grad():
            fold_average_pools(merged, flow.pool_folds)
            expected, got = model(pair), merged(pair)
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        same = isinstance(got, Tensor) and got.shape == expected.shape
        if not (same and torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)):
            return None
    except RuntimeError:
        return None
    return merged, flow


class LRP:
    """LRP explainer: ``LRP(model, composite)(x, target) -> relevance`` shaped like ``x``.

    Parameters
    ----------
    model:
        The classifier, output (B, classes). It is deep-copied (never modified); explanations
        describe the model as it was at construction, in eval mode.
    composite:
        ``"epsilon_plus_flat"`` (default), ``"epsilon_gamma_box"`` (needs ``low``/``high``, the
        input bounds, floats or tensors broadcastable to one sample), ``"epsilon_alpha2_beta1_flat"``
        or ``"epsilon"`` (ε everywhere: with the AttnLRP rules, plain AttnLRP for transformers);
        see :mod:`explainers.composites` and :mod:`explainers.attention_rules`.
    epsilon:
        ε of the ε rule (nn.Linear layers).
    stabilizer:
        ε used only to stabilise the denominators of the other rules.
    zero_bias:
        Leave biases out of the rules' modified forwards ``z`` (zennit ``zero_params="bias"``): a
        layer then passes on all relevance it receives, except at outputs whose ``z`` is 0.
    low, high, gamma:
        Input bounds of z^B and γ of the γ rule (``epsilon_gamma_box`` only).

    concept_layer:
        The hidden layer whose per-channel relevance :meth:`explain_with_concepts` returns (a
        module path of ``model``, as in ``named_modules()``); ``"auto"``: the last convolution.
        Relevance ``R_j = z_j · ∇̂_{z_j} f`` of its outputs, summed over positions, is one number
        per channel (a "concept", CRP: Achtibat et al. 2023): where in the input a pattern sits
        does not change it, only how much the model relies on that channel's pattern.

    Raises
    ------
    UnsupportedModelError
        At construction, if the model has modules without an LRP rule (listed with their paths);
        at the first call, if its forward code applies operations without an LRP rule or its
        first layer does not alone read the input (see :mod:`explainers.dataflow`).
    """

    def __init__(
        self,
        model: nn.Module,
        composite: str = "epsilon_plus_flat",
        *,
        epsilon: float = 1e-6,
        stabilizer: float = 1e-6,
        zero_bias: bool = False,
        low: float | Tensor | None = None,
        high: float | Tensor | None = None,
        gamma: float = 0.25,
        concept_layer: str | None = "auto",
    ) -> None:
        if composite not in COMPOSITES:
            raise ValueError(f"composite={composite!r} is not one of {sorted(COMPOSITES)}")
        options: dict[str, object] = {"epsilon": epsilon, "stabilizer": stabilizer, "zero_bias": zero_bias}
        if composite == "epsilon_gamma_box":
            if low is None or high is None:
                raise ValueError("composite='epsilon_gamma_box' needs the input bounds low= and high=")
            options.update(low=low, high=high, gamma=gamma)
        elif low is not None or high is not None:
            raise ValueError(f"low/high only apply to composite='epsilon_gamma_box', not {composite!r}")
        self.composite = composite
        self._rule_map: Composite = make_composite(composite, **options)
        check_supported(model)
        self.concept_layer = _concept_layer(model, concept_layer)
        self._model = nn.Sequential(frozen_copy(model))  # a container, so the root can be replaced too
        # the LRP-ized model(s), built at the first call: per input shape (of one sample) when a
        # folded average pooling ties them to it, else under the key None (any shape)
        self._prepared: dict[tuple[int, ...] | None, _Prepared] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _prepared_for(self, x: Tensor) -> _Prepared:
        shape = tuple(x.shape[1:])
        return self._prepared.get(shape) or self._prepared.get(None) or self._prepare(x)

    def _prepare(self, x: Tensor) -> _Prepared:
        """Once per input shape at most: trace the data flow, fold BatchNorms and poolings, apply the rules."""
        with self._lock:
            shape = tuple(x.shape[1:])
            found = self._prepared.get(shape) or self._prepared.get(None)
            if found is not None:
                return found
            model = self._model
            if model is None:
                raise RuntimeError("this explainer failed to prepare its LRP model earlier; build a new one")
            placement = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
            sample = x[:1].detach()
            if placement is not None:
                sample = sample.to(device=placement.device, dtype=placement.dtype)
            channels_last = _CHANNELS_LAST and (
                x.ndim == 4 and x.device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules())
            )
            traced = sample.contiguous(memory_format=torch.channels_last) if channels_last else sample
            if channels_last:
                try:
                    flow = trace(model, traced)
                except RuntimeError:  # e.g. forward code calling .view() on activations
                    channels_last, traced = False, sample
            if not channels_last:
                flow = trace(model, traced)
            pool_folds = flow.pool_folds if _FOLD_POOLS else []
            if pool_folds:  # the rewritten copy only fits this input shape: keep the original for others
                merged = _merged_copy(model, flow, pool_folds, traced)
                if merged is None:
                    pool_folds = []
                else:
                    model, flow = merged
            try:  # from here on the copy is rewritten: a failure leaves it unusable
                with torch.inference_mode(False), torch.no_grad():
                    fold_batch_norms(model, flow.folds)
                    first = self._rule_map.apply(model, flow.first, flow.gates, flow.relu_fed, flow.also_first)
                    if channels_last:  # weights in the layout of the activations: no conversion per call
                        model.to(memory_format=torch.channels_last)
            except BaseException as error:
                if not pool_folds:  # the original itself was being rewritten
                    self._model = None
                raise RuntimeError("preparing the LRP model failed; build a new explainer") from error
            prepared = _Prepared(DeviceCopies(model), bool(getattr(first, "yields_relevance", False)), channels_last,
                                 flow.attnlrp)
            if pool_folds:
                shaped = [key for key in self._prepared if key is not None]
                for key in shaped[: max(0, len(shaped) + 1 - _MAX_SHAPES)]:  # oldest first
                    del self._prepared[key]
            self._prepared[shape if pool_folds else None] = prepared
            return prepared

    def __call__(self, x: Tensor, target: Tensor) -> Tensor:
        """Relevance of every input element for ``logits[b, target[b]]``; same shape, dtype, device as ``x``."""
        return self.explain(x, check_inputs(x, target)).relevance

    def explain(self, x: Tensor, target: Tensor | str = PREDICTED) -> Explanation:
        """Relevance, logits and explained class from one forward and one backward pass.

        ``target`` is a (B,) tensor of classes or ``"predicted"`` (the argmax of the logits of
        this same forward pass); see :mod:`.explanation`.
        """
        return self._run(x, target, concepts=False)[0]

    def explain_with_concepts(self, x: Tensor, target: Tensor | str = PREDICTED) -> tuple[Explanation, Tensor]:
        """:meth:`explain` and, from the same pass, the per-channel relevance ``(B, C)`` at
        :attr:`concept_layer` (its outputs' relevance summed over positions)."""
        if self.concept_layer is None:
            raise ValueError("explain_with_concepts needs a concept_layer (this model has no convolution to default to)")
        return self._run(x, target, concepts=True)

    def explain_conditional(self, x: Tensor, layer: str, channels, target: Tensor | str = PREDICTED) -> Explanation:
        """A conditional heatmap (CRP, Achtibat et al. 2023): the relevance of the input that flows through
        ``channels`` of the hidden module ``layer`` (a path of the user's model) and through no other channel
        of it, i.e. where in each input the concept those channels form sits. Summed over all channels of the
        layer, conditional heatmaps give :meth:`explain`'s heatmap (the layer is one cut of the graph)."""
        keep = sorted({int(c) for c in channels})
        if not keep:
            raise ValueError("explain_conditional needs at least one channel")
        return self._run(x, target, concepts=False, condition=(layer, keep))[0]

    def explain_observing(self, x: Tensor, layer: str, target: Tensor | str = PREDICTED) -> tuple[Explanation, list]:
        """:meth:`explain` and, from the same forward pass, the outputs of module ``layer`` (a path of the user's
        model; every call of it, detached): what the layer computed for ``x`` in the explained copy (a BatchNorm
        after a convolution folded into it), without a second forward pass."""
        seen: list[Tensor] = []
        return self._run(x, target, concepts=False, observe=(layer, seen))[0], seen

    def _run(self, x: Tensor, target: Tensor | str, concepts: bool, condition: tuple[str, list[int]] | None = None,
             observe: tuple[str, list] | None = None) -> tuple[Explanation, Tensor | None]:
        wanted = check_target(x, target)
        if x.shape[0] == 0:
            empty = torch.zeros(0, dtype=torch.long, device=x.device)
            return (Explanation(torch.zeros_like(x), x.new_zeros((0, 0)), empty if wanted is None else wanted),
                    x.new_zeros((0, 0)) if concepts else None)
        prepared = self._prepared_for(x)
        model = prepared.copies.get(x)
        captured: list[Tensor] = []
        hooks = []
        caller = threading.get_ident()

        def module(path: str) -> nn.Module:
            try:
                return model.get_submodule(f"0.{path}")
            except AttributeError:
                raise ValueError(f"layer {path!r} is not a module of the model (see model.named_modules())") from None

        if concepts:
            def capture(_module, _inputs, output):  # only this call's forward (the copy may be shared by threads)
                if threading.get_ident() == caller:
                    captured.append(output)

            hooks.append(module(self.concept_layer).register_forward_hook(capture))
        if condition is not None:
            hooks.append(module(condition[0]).register_forward_hook(_masking(condition)))
        if observe is not None:
            def keep(_module, _inputs, output):
                if threading.get_ident() == caller:
                    observe[1].append(output.detach() if isinstance(output, Tensor) else output)

            hooks.append(module(observe[0]).register_forward_hook(keep))
        try:
            return self._explain(x, wanted, prepared, model, captured if concepts else None)
        finally:
            for hook in hooks:
                hook.remove()

    def _explain(self, x: Tensor, wanted, prepared: _Prepared, model: nn.Module,
                 captured) -> tuple[Explanation, Tensor | None]:
        layer_relevance = None
        with torch.inference_mode(False), torch.enable_grad():
            x_in = x.detach()
            if prepared.channels_last and x.ndim == 4 and x.device.type == "cpu":
                x_in = x_in.contiguous(memory_format=torch.channels_last)
            if x_in.is_inference():  # created under torch.inference_mode: autograd needs a normal tensor
                x_in = x_in.clone()
            x_in = x_in.detach().requires_grad_(True)
            with AttnLRPMode() if prepared.attnlrp else nullcontext():
                logits = model(x_in)
            chosen = resolve_target(logits, wanted)
            score = target_scores(logits, chosen).sum()
            if captured is None:
                (grad,) = torch.autograd.grad(score, x_in, allow_unused=True, materialize_grads=True)
            else:
                if len(captured) != 1:
                    raise RuntimeError(f"concept_layer {self.concept_layer!r} ran {len(captured)} times in one "
                                       "forward pass; choose a layer that runs once")
                hidden = captured[0]
                grad, hidden_grad = torch.autograd.grad(score, (x_in, hidden), allow_unused=True,
                                                        materialize_grads=True)
                layer_relevance = (hidden.detach() * hidden_grad).flatten(2).sum(2) if hidden.ndim > 2 else \
                    hidden.detach() * hidden_grad
        relevance = grad if prepared.yields_relevance else x_in.detach() * grad
        if relevance.stride() != x.stride():
            relevance = torch.empty_like(x).copy_(relevance)
        return Explanation(relevance, logits.detach(), chosen), layer_relevance
