"""lxt's efficient AttnLRP as a reference for ``LRP(model, "epsilon")`` on Vision Transformers.

Benchmark/test only: ``lxt`` (PyPI ``lxt==2.1``) is never a runtime dependency of unhans, and every
``lxt`` import sits inside a function, so importing this module needs only torch.

lxt 2.1's "efficient" AttnLRP is Gradient x Input with the backward pass bent by forward patches
(``lxt/efficient/patches.py``, ``lxt/efficient/rules.py``):

* ``nn.LayerNorm``  -> ``patches.layer_norm_forward``: ``(x - mean(x)) / stop_grad(std) * w + b``
  (only σ detached; the mean keeps its gradient).
* ``nn.GELU`` (and other element-wise activations) -> ``patches.non_linear_forward``:
  ``rules.identity_rule_implicit``, backward ``grad_in = f(x) / (x + 1e-10) * grad_out``.
* attention: ``patches.wrap_attention_forward`` (what lxt applies to the Hugging Face models)
  divides the gradient reaching q and k by 4 and v by 2 (``rules.divide_gradient``): the uniform
  rule on both products ``q kᵀ`` and ``softmax(·) v``; the softmax itself keeps its plain gradient
  (the Taylor rule at x equals x ⊙ ∇ in this form).
* ``nn.Linear``, ``nn.Conv2d``, additions, reshapes, the class token and position embedding:
  untouched, plain gradient (ε = 0, no stabiliser).

lxt's own map for torchvision (``lxt.efficient.models.vit_torch.cp_LRP``, used by
``lxt.efficient.monkey_patch(torchvision.models.vision_transformer)``) uses the same LayerNorm and
GELU patches but CP-LRP inside attention (``patches.cp_multi_head_attention_forward``: query and
key detached, so no relevance flows through the softmax). ``variant="cp"`` reproduces that map;
the default ``variant="attnlrp"`` applies lxt's AttnLRP attention rule to ``nn.MultiheadAttention``.

``monkey_patch`` replaces ``forward`` on the *classes* ``torch.nn.LayerNorm``, ``torch.nn.GELU`` and
``torch.nn.MultiheadAttention`` for the whole process (torchvision's ``vision_transformer.nn`` is
``torch.nn``) and cannot be undone. Here the same lxt functions are bound to the *instances* of a
deep copy instead, so the caller's model and every other model in the process stay as they were.
"""
from __future__ import annotations

import copy
import time
import types
from typing import Callable

import torch
from torch import nn

# Element-wise activations that get lxt's identity rule. ReLU is left alone: x·[relu(x)/x] has
# the same gradient as relu.
_ACTIVATIONS = (nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.Softplus, nn.Mish)


def _attnlrp_mha_forward(self, query, key, value, *args, **kwargs):
    """``nn.MultiheadAttention.forward`` with lxt's AttnLRP attention rule.

    q, k and v are linear in ``query``, ``key`` and ``value``, so dividing the gradient at the
    module's inputs equals lxt's ``wrap_attention_forward`` (q/4, k/4, v/2 after the projection).
    Three distinct tensors also keep MultiheadAttention off its packed self-attention path,
    which changes nothing numerically.
    """
    from lxt.efficient.rules import divide_gradient

    return self.original_forward(
        divide_gradient(query, 4), divide_gradient(key, 4), divide_gradient(value, 2), *args, **kwargs
    )


def _patch(model: nn.Module, variant: str) -> int:
    """Bind lxt's patched forwards to the LayerNorm, activation and attention instances of ``model``."""
    from lxt.efficient.patches import cp_multi_head_attention_forward, layer_norm_forward, non_linear_forward

    attention = {"attnlrp": _attnlrp_mha_forward, "cp": cp_multi_head_attention_forward}[variant]
    patched = 0
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.forward = types.MethodType(layer_norm_forward, module)
        elif isinstance(module, _ACTIVATIONS):
            module.original_forward = module.forward
            module.forward = types.MethodType(non_linear_forward, module)
        elif isinstance(module, nn.MultiheadAttention):
            module.original_forward = module.forward
            module.forward = types.MethodType(attention, module)
        else:
            continue
        patched += 1
    return patched


def lxt_explainer(model: nn.Module, variant: str = "attnlrp", eval_mode: bool = True
                  ) -> Callable[[torch.Tensor, torch.Tensor | int | None], torch.Tensor]:
    """Patch a deep copy of ``model`` once; return ``explain(x, target=None) -> relevance``.

    ``eval_mode=True`` puts the copy in eval mode (dropout off). lxt itself does nothing about
    dropout for torchvision models: with ``eval_mode=False`` the copy keeps the caller's mode and a
    model in train mode with dropout p > 0 gives random, rescaled relevance.
    """
    if variant not in ("attnlrp", "cp"):
        raise ValueError(f"variant must be 'attnlrp' or 'cp', got {variant!r}")
    import lxt.efficient  # noqa: F401  (fails here, with ImportError, when lxt is missing)

    patched_model = copy.deepcopy(model)
    if eval_mode:
        patched_model.eval()
    patched_model.requires_grad_(False)
    _patch(patched_model, variant)

    def explain(x: torch.Tensor, target: torch.Tensor | int | None = None) -> torch.Tensor:
        x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = patched_model(x)
            if target is None:
                target = logits.argmax(1)
            elif not torch.is_tensor(target):
                target = torch.full((len(x),), int(target), dtype=torch.long)
            target = target.to(logits.device).reshape(-1, 1)
            logits.gather(1, target).sum().backward()
        return (x * x.grad).detach()

    return explain


def lxt_relevance(model: nn.Module, x: torch.Tensor, target: torch.Tensor | int | None = None,
                  variant: str = "attnlrp") -> torch.Tensor:
    """lxt's efficient AttnLRP input relevance ``x ⊙ ∇x`` of the predicted (or ``target``) logit.

    Works for torchvision ``VisionTransformer`` and for any ViT built from ``nn.MultiheadAttention``,
    ``nn.LayerNorm``, ``nn.GELU``, ``nn.Linear`` and a convolutional patch embedding, provided the
    model calls these modules (not ``F.gelu`` / ``F.layer_norm`` / ``F.scaled_dot_product_attention``,
    which lxt cannot see). ``model`` is not modified.
    """
    return lxt_explainer(model, variant)(x, target)


def lxt_throughput(model: nn.Module, x: torch.Tensor, repeats: int = 5, variant: str = "attnlrp") -> float:
    """Median seconds per explained batch (patching and one warm-up call excluded)."""
    explain = lxt_explainer(model, variant)
    explain(x)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        explain(x)
        seconds.append(time.perf_counter() - start)
    return sorted(seconds)[len(seconds) // 2]


def _demo() -> None:
    import torchvision

    from lrp_speed import trained_scale_, without_constants

    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None, image_size=64).eval()
    x = torch.randn(2, 3, 64, 64)

    def report(name: str, m: nn.Module) -> None:
        with torch.no_grad():
            logits = m(x)
        target = logits.argmax(1)
        logit = logits.gather(1, target[:, None])[:, 0]
        relevance = lxt_relevance(m, x)
        total = relevance.flatten(1).sum(1)
        print(f"{name}: relevance shape {tuple(relevance.shape)}, target {target.tolist()}")
        for i in range(len(x)):
            ratio = float(total[i] / logit[i]) if logit[i] != 0 else float("nan")
            print(f"  sample {i}: sum R {float(total[i]):+.6g}  logit {float(logit[i]):+.6g}"
                  f"  sum R / logit {ratio:.4g}")
        print(f"  seconds per call (batch {len(x)}): {lxt_throughput(m, x, repeats=5):.3f}")

    # torchvision zero-initialises the classification head: every logit is 0 and so is R.
    report("vit_b_16(weights=None) as initialised", model)

    # Random weights at a trained model's scale (as benchmarks/lrp_speed.py:build_vit does).
    trained_scale_(model)
    report("vit_b_16, trained-scale random weights", model)

    report("same, every bias / class token / position embedding zeroed", without_constants(model))

    cp = lxt_relevance(model, x, variant="cp")
    attn = lxt_relevance(model, x)
    print(f"CP-LRP (lxt's own torchvision map) vs AttnLRP: relative L2 {float((cp - attn).norm() / attn.norm()):.3g}")

    # Dropout: lxt leaves nn.Dropout and MultiheadAttention's dropout alone for torchvision.
    torch.manual_seed(0)
    dropped = torchvision.models.vit_b_16(weights=None, image_size=64, dropout=0.1, attention_dropout=0.1)
    dropped.load_state_dict(model.state_dict())
    dropped.train()
    a, b = (lxt_explainer(dropped, eval_mode=False)(x, 0) for _ in range(2))
    ev = lxt_explainer(dropped)(x, 0)
    print(f"dropout 0.1, train mode: two calls differ by relative L2 {float((a - b).norm() / a.norm()):.3g}; "
          f"eval mode (default here) vs the p=0 model: {float((ev - lxt_relevance(model, x, 0)).norm()):.3g}")


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description="lxt's AttnLRP on vit_b_16 (64x64, batch 2): relevance, conservation, "
                                        "seconds per call (needs lxt 2.1 with transformers 4.x)").parse_args()
    _demo()
