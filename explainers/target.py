"""The explained output: the target logit of each sample.

All explainers explain ``f_t(x) = logits[b, target[b]]``; LRP starts its backward pass from
``one_hot(target) ⊙ logits`` (relevance = the explained logit).
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_inputs(x: Tensor, target: Tensor) -> Tensor:
    """Validate ``x`` (B, ...) floating and ``target`` (B,) integer; return ``target`` on ``x``'s device."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1:
        raise TypeError(f"x must be a floating tensor of shape (B, ...), got {type(x).__name__} "
                        f"{getattr(x, 'dtype', '')} {tuple(getattr(x, 'shape', ()))}")
    target = torch.as_tensor(target, device=x.device)
    if target.ndim == 0:
        target = target.expand(x.shape[0])
    if target.dtype.is_floating_point or target.dtype == torch.bool or target.shape != (x.shape[0],):
        raise ValueError(f"target must be an integer tensor of shape ({x.shape[0]},), "
                         f"got {target.dtype} {tuple(target.shape)}")
    target = target.long()
    if target.is_inference():  # created under torch.inference_mode: usable by autograd only as a copy
        with torch.inference_mode(False):
            target = target.clone()
    return target


def check_logits(logits: object) -> Tensor:
    """``logits`` if it is a (B, classes) tensor; else ValueError saying what the model returned."""
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"model output must be a tensor of shape (B, classes), got {got}")
    return logits


def target_scores(logits: Tensor, target: Tensor) -> Tensor:
    """``logits[b, target[b]]`` for a (B, C) output; shape (B,)."""
    check_logits(logits)
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        raise ValueError(f"target out of range for {logits.shape[1]} classes")
    return logits.gather(1, target[:, None].to(logits.device))[:, 0]
