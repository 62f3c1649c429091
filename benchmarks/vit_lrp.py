"""LRP on Vision Transformers (issue #16): agreement with lxt, conservation, and faithfulness on a trained ViT.

1. Trains the embedded audit's small ViT (``unhans audit`` with ``training.architecture: vit``,
   seed 0; the audit's own result is printed too).
2. Agreement: relative L2 between ``LRP(model, "epsilon", epsilon=1e-9)`` (and the default
   ε = 1e-6; lxt's Linear layers pass the plain gradient, ε = 0) and lxt's efficient AttnLRP
   (``benchmarks/lxt_reference.py``; skipped when ``lxt`` is not installed) on torchvision
   ``vit_b_16`` (random weights at a trained model's scale, image_size=64, batch 2) and on the
   trained small ViT (batch 2), explaining the predicted logit.
3. Conservation: ``Σ R / logit`` with ``zero_bias=True``, as the model is and with every
   constant (biases, LayerNorm β, class token, position embedding) set to 0.
4. Faithfulness: pixel-flipping AOPC (most relevant first, pixels replaced by 0, 64 steps of 16
   pixels, the explained logit) on 256 clean test images for AttnLRP (``composite="epsilon"``),
   LRP with the Flat rule on the patch embedding (``epsilon_plus_flat``, the audit's default
   composite), gradient × input, the absolute gradient and a random order.

    python benchmarks/vit_lrp.py        # ~3 min on 2 cores

Ends with ``RESULT lxt_vit_b_16=… lxt_small_vit=… conservation_vit_b_16=… conservation_small_vit=…
aopc_attnlrp=… aopc_gradient_x_input=… attnlrp_beats_gxi=0|1``.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def conservation(model, x) -> tuple[float, float]:
    """Median ``Σ R / logit`` with zero_bias=True: the model as it is, and with every constant zeroed."""
    from unhans.explainers import LRP

    def ratio(m):
        e = LRP(m, "epsilon", zero_bias=True).explain(x)
        return float(np.median((e.relevance.flatten(1).sum(1) / e.logits.gather(1, e.target[:, None])[:, 0]).numpy()))

    from lrp_speed import without_constants

    return ratio(model), ratio(without_constants(model))


def main() -> None:
    import argparse

    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    from unhans.explainers import LRP, make_explainer
    from unhans.explainers.faithfulness import pixel_flipping
    from unhans.pipeline import run_audit
    from unhans.pipeline.config import from_dict
    from unhans.pipeline.small_vit import small_vit
    from lrp_speed import build_vit

    torch.manual_seed(0)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "vit"
        summary = run_audit(from_dict({"training": {"architecture": "vit"}, "spray": {"umap": False}}), run,
                            quiet=True)
        ev = summary["evaluation"]
        print(f"audit (vit, seed 0): poisoned class rank {ev['artifact_class_rank']}, artifact precision "
              f"{ev['artifact_precision']:.3f} recall {ev['artifact_recall']:.3f}")
        model = small_vit()
        model.load_state_dict(torch.load(run / "model.pt", weights_only=True))
        model.eval()
        test = np.load(run / "inputs" / "test.npz")
        x = torch.from_numpy(test["images"][:256]).float()

    big, big_x, _ = build_vit(64, batch=2)
    try:
        from lxt_reference import lxt_relevance

        for name, m, xs in (("vit_b_16", big, big_x), ("small_vit", model, x[:2])):
            reference = lxt_relevance(m, xs)
            equal = LRP(m, "epsilon", epsilon=1e-9).explain(xs).relevance  # lxt's Linear rule is ε = 0
            default = LRP(m, "epsilon").explain(xs).relevance
            result[f"lxt_{name}"] = f"{relative_l2(equal, reference):.2e}"
            result[f"lxt_{name}_eps1e-6"] = f"{relative_l2(default, reference):.2e}"
            print(f"agreement with lxt, {name}: relative L2 {result[f'lxt_{name}']} (epsilon=1e-9), "
                  f"{result[f'lxt_{name}_eps1e-6']} (the default epsilon=1e-6)")
    except ImportError as error:
        print(f"(lxt not installed: {error}; agreement not measured)")

    for name, m, xs in (("vit_b_16", big, torch.rand(4, 3, 64, 64)), ("small_vit", model, x[:64])):
        as_is, zeroed = conservation(m, xs)
        result[f"conservation_{name}"] = f"{as_is:.3g}"
        result[f"conservation_{name}_constants_zeroed"] = f"{zeroed:.3f}"
        print(f"conservation (zero_bias=True, median sum R / logit), {name}: {as_is:.3g} as is, "
              f"{zeroed:.3f} with every constant zeroed")

    with torch.no_grad():
        target = model(x).argmax(1)
    maps = {
        "attnlrp": LRP(model, "epsilon")(x, target),
        "lrp_flat": LRP(model, "epsilon_plus_flat")(x, target),
        "gradient_x_input": make_explainer(model, "gradient_x_input")(x, target),
        "gradient": make_explainer(model, "gradient")(x, target).abs(),
        "random": torch.rand(x.shape, generator=torch.Generator().manual_seed(0)),
    }
    for name, relevance in maps.items():
        curves = pixel_flipping(model, x, target, relevance, regions_per_step=16, replacement="black")
        aopc = curves.aopc()
        result[f"aopc_{name}"] = f"{float(aopc.mean()):.3f}"
        print(f"pixel-flipping AOPC (logit), {name:17s}: {float(aopc.mean()):.3f} ± {float(aopc.std() / 16):.3f}")
    result["attnlrp_beats_gxi"] = int(float(result["aopc_attnlrp"]) > float(result["aopc_gradient_x_input"]))
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
