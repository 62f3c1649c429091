"""Agreement of the LRP engine with zennit (issue #3, item 1), as numbers rather than a pass/fail test.

For torchvision vgg16, vgg16_bn, resnet18 and resnet50 with random weights, random non-zero
biases on every Linear/Conv (added where the architecture has none) and random BatchNorm
statistics and affine parameters, inputs 2×3×S×S (S = 64 and 224): the relative L2 distance
``‖R_ours − R_zennit‖ / ‖R_zennit‖`` for EpsilonPlusFlat with zennit's VGG/ResNet canonizer,
the output relevance being the explained logit. At S = 64, VGG's adaptive average pooling
enlarges a 2×2 map to 7×7 and the engine merges it into the first classifier layer; at 224 it
is the identity and nothing is merged, so both code paths are covered.

A second column repeats each BatchNorm model with every BatchNorm's ``eps`` set to 0: zennit's
canonizer merges a BatchNorm into the preceding layer but leaves the BatchNorm in place with
unit statistics and its ``eps``, so it still scales by ``1/√(1 + eps)``; the engine removes it
exactly. With ``eps = 0`` the two definitions coincide, and what remains is rounding.

    python benchmarks/lrp_agreement.py          # ~40 s on 2 idle cores

Ends with ``RESULT max_rel_l2=<worst> <model>_<size>=<distance> ...``.
"""

from __future__ import annotations

import torch
from torch import nn

MODELS = ("vgg16", "vgg16_bn", "resnet18", "resnet50")


def randomized(name: str) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    generator = torch.Generator().manual_seed(1)

    def uniform(shape, low: float, high: float) -> torch.Tensor:
        return torch.rand(shape, generator=generator) * (high - low) + low

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if module.bias is None:
                    module.bias = nn.Parameter(torch.zeros(module.weight.shape[0]))
                module.bias.copy_(uniform(module.bias.shape, -0.1, 0.1))
            if isinstance(module, nn.BatchNorm2d):
                features = module.num_features
                module.running_mean.copy_(uniform(features, -0.2, 0.2))
                module.running_var.copy_(uniform(features, 0.5, 1.5))
                module.weight.copy_(uniform(features, 0.5, 1.5))
                module.bias.copy_(uniform(features, -0.2, 0.2))
    return model.eval()


def distance(name: str, size: int, bn_eps: float | None = None) -> float:
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    from unhans.explainers import LRP

    model = randomized(name)
    if bn_eps is not None:
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = bn_eps
    x = torch.rand((2, 3, size, size), generator=torch.Generator().manual_seed(5))
    target = torch.tensor([3, 711])
    ours = LRP(model, "epsilon_plus_flat")(x, target)
    canonizer = VGGCanonizer() if name.startswith("vgg") else ResNetCanonizer()
    with Gradient(model, EpsilonPlusFlat(canonizers=[canonizer])) as attributor:
        _, reference = attributor(x.clone().requires_grad_(), lambda out: out * nn.functional.one_hot(target, 1000))
    return float((ours - reference).norm() / reference.norm())


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 224], help="input sizes S (default 64 224)")
    args = parser.parse_args()
    results, without_eps = {}, {}
    print(f"{'model':10s} {'size':>5s} {'rel. L2 to zennit':>18s} {'BatchNorm eps = 0':>18s}")
    for size in args.sizes:
        for name in MODELS:
            key = f"{name}_{size}"
            results[key] = distance(name, size)
            line = f"{name:10s} {size:5d} {results[key]:18.2e}"
            if name != "vgg16":  # the others have BatchNorms
                without_eps[key] = distance(name, size, bn_eps=0.0)
                line += f" {without_eps[key]:18.2e}"
            print(line, flush=True)
    print(f"RESULT max_rel_l2={max(results.values()):.2e} max_rel_l2_bn_eps0={max(without_eps.values()):.2e} "
          + " ".join(f"{k}={v:.2e}" for k, v in results.items()))


if __name__ == "__main__":
    main()
