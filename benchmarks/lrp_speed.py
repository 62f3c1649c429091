"""Speed and memory of the LRP engine against a plain input gradient and zennit (issue #3).

For torchvision vgg16 and resnet50 (random weights, random non-zero biases and BatchNorm
statistics; nothing is downloaded), batch 8, 3×64×64 and 3×224×224, on CPU:

* **time** — one process; for every thread setting (1 thread, then torch's default) the
  methods are timed in alternation, round after round (the order rotates every round), and
  the median per method is reported; ratios are taken per round (the two methods ran side by
  side) and their median is reported. Methods: ``gradient`` — the plain input gradient
  ``∂ logit_target / ∂x`` of the model as given (NCHW); ``gradient_cl`` — the same in the
  channels-last layout, which the engine uses internally on CPU (reported so the layout's share
  of the speed-up is visible); ``lrp`` — ``explainers.LRP(model, "epsilon_plus_flat")``;
  ``zennit`` — zennit's ``EpsilonPlusFlat`` with its VGG/ResNet canonizer through
  ``zennit.attribution.Gradient`` (context entered once, on its own copy of the model). Each
  method is called once before timing (LRP prepares its model on that first call).
* **extra peak memory** — every (method, model, size) runs in a fresh subprocess
  (1 thread) with ``MALLOC_MMAP_THRESHOLD_=65536``, so glibc serves every tensor-sized block
  by ``mmap`` and returns it on free, and the resident set follows the live tensors. After
  building model, input and explainer and a warm-up call on one sample (so that nothing
  batch-sized is still held from it, e.g. by zennit's hooks), the process resets its peak RSS
  (``/proc/self/clear_refs`` ← 5), reads its RSS, runs one explanation, and reports
  ``VmHWM − RSS before`` — the memory the explanation itself needed, results included.
  (tracemalloc does not see torch's allocations, and torch has no CPU allocator statistics.)

    python benchmarks/lrp_speed.py            # full table (~15 min on 2 busy cores)
    python benchmarks/lrp_speed.py --quick    # 3×64×64 only, 3 rounds (~2 min)
    python benchmarks/lrp_speed.py --vit      # ViT rows only (issue #16, ~6 min)

ViT rows (``--vit``): torchvision ``vit_b_16`` (random weights at a trained model's scale, the
zero-initialised head included), batch 8, 3×64×64 (``image_size=64``) and 3×224×224, the
default thread setting: ``gradient`` (plain input gradient; torch's fused attention kernel),
``lrp`` (``LRP(model, "epsilon")``: ε everywhere plus the AttnLRP rules) and, when the ``lxt``
package is installed, ``lxt`` (its efficient AttnLRP on its own copy, see
``benchmarks/lxt_reference.py``), timed in alternation. Ends with ``RESULT vit_b_16_64=…
vit_b_16_224=… lxt_speedup=…`` (LRP/gradient time ratios; lxt's time over LRP's, smallest row).

Ends with one line ``RESULT vgg16_64=… resnet50_64=… vgg16_224=… resnet50_224=…
zennit_speedup=… zennit_memory=…``: the LRP/gradient time ratios (worst thread setting), the
smallest zennit/LRP time ratio and the largest LRP/zennit extra-memory ratio over all rows;
then the LRP/gradient extra-memory ratio, and every row's ratios per thread setting (``_t1``,
``_t2``), against the channels-last gradient (``_vs_cl``) and zennit's time over LRP's (``_zennit``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

MODELS = ("vgg16", "resnet50")
METHODS = ("gradient", "gradient_cl", "lrp", "zennit")
RATIOS = {"lrp/grad": ("lrp", "gradient"), "lrp/grad_cl": ("lrp", "gradient_cl"), "zennit/lrp": ("zennit", "lrp")}


def build(name: str, size: int, batch: int = 8) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Random-weight torchvision model with random non-zero biases and BatchNorm statistics, input, targets."""
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                module.bias.copy_(torch.rand(module.bias.shape, generator=generator) * 0.2 - 0.1)
            if isinstance(module, nn.BatchNorm2d):
                features = module.num_features
                module.running_mean.copy_(torch.rand(features, generator=generator) * 0.4 - 0.2)
                module.running_var.copy_(torch.rand(features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(features, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(features, generator=generator) * 0.4 - 0.2)
    x = torch.rand(batch, 3, size, size, generator=generator)
    target = torch.arange(batch) * 7 % 1000
    return model, x, target


def plain_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``∂ logit_target / ∂x``, the baseline: one forward and one backward of the model as given."""
    x = x.detach().requires_grad_(True)
    score = model(x).gather(1, target[:, None]).sum()
    return torch.autograd.grad(score, x)[0]


def methods(name: str, model: nn.Module, which=METHODS) -> dict:
    """Callables ``(x, target) -> relevance`` for every method, each on its own copy of the model where needed."""
    import copy

    from unhans.explainers import LRP

    calls = {}
    if "gradient" in which:
        frozen = copy.deepcopy(model).requires_grad_(False)
        calls["gradient"] = lambda x, target: plain_gradient(frozen, x, target)
    if "gradient_cl" in which:
        layout = copy.deepcopy(model).requires_grad_(False).to(memory_format=torch.channels_last)
        calls["gradient_cl"] = lambda x, target: plain_gradient(
            layout, x.contiguous(memory_format=torch.channels_last), target
        )
    if "lrp" in which:
        explainer = LRP(model, "epsilon_plus_flat")
        calls["lrp"] = lambda x, target: explainer(x, target)
    if "zennit" in which:
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonPlusFlat
        from zennit.torchvision import ResNetCanonizer, VGGCanonizer

        canonizer = VGGCanonizer() if name.startswith("vgg") else ResNetCanonizer()
        attributor = Gradient(copy.deepcopy(model), EpsilonPlusFlat(canonizers=[canonizer]))
        attributor.__enter__()  # kept open: hooks and canonizers stay on zennit's own copy
        calls["zennit"] = lambda x, target: attributor(
            x.clone().requires_grad_(True), lambda out: out * nn.functional.one_hot(target, out.shape[1]).to(out.dtype)
        )[1]
    return calls


def alternate(calls: dict, x: torch.Tensor, target: torch.Tensor, rounds: int) -> dict[str, list[float]]:
    """Seconds of every call per round, after one warm-up call each (LRP prepares its model there); the
    order rotates every round, so each method runs side by side with the others."""
    for call in calls.values():
        call(x, target)
    seconds: dict[str, list[float]] = {key: [] for key in calls}
    order = list(calls)
    for r in range(rounds):
        for key in order[r % len(order):] + order[: r % len(order)]:
            start = time.perf_counter()
            calls[key](x, target)
            seconds[key].append(time.perf_counter() - start)
    return seconds


def time_rows(sizes: list[int], rounds: dict[int, int], threads: list[int]) -> list[dict]:
    """Median seconds per method for every (model, size, threads), methods alternating round by round."""
    rows = []
    for name in MODELS:
        for size in sizes:
            model, x, target = build(name, size)
            calls = methods(name, model)
            for count in threads:
                torch.set_num_threads(count)
                seconds = alternate(calls, x, target, rounds[size])
                row = {"model": name, "size": size, "threads": count}
                row.update({key: statistics.median(values) for key, values in seconds.items()})
                for ratio, (num, den) in RATIOS.items():  # per round (methods ran side by side), then median
                    row[ratio] = statistics.median(a / b for a, b in zip(seconds[num], seconds[den]))
                rows.append(row)
                print(
                    f"{name:9s} {size:4d} {count:7d} "
                    + " ".join(f"{row[key]:10.3f}" for key in METHODS)
                    + f" {row['lrp/grad']:9.3f} {row['lrp/grad_cl']:11.3f} {row['zennit/lrp']:10.2f}",
                    flush=True,
                )
            del calls, model
    return rows


_MEMORY_CHILD = """
import gc, json, sys, torch
sys.path.insert(0, {here!r})
from lrp_speed import build, methods
torch.set_num_threads(1)
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
name, size, method = {name!r}, {size}, {method!r}
model, x, target = build(name, size)
call = methods(name, model, which=[method])[method]
call(x[:1], target[:1])  # warm-up on one sample (LRP prepares its model; nothing batch-sized stays cached)
gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS:")
result = call(x, target)
print(json.dumps({{"extra": status("VmHWM:") - before}}))
"""


def extra_memory(name: str, size: int, method: str) -> float:
    """Extra peak resident memory (MB) of one explanation, measured in a fresh subprocess."""
    code = _MEMORY_CHILD.format(here=os.path.dirname(os.path.abspath(__file__)), name=name, size=size, method=method)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["extra"] / 2**20


def memory_rows(sizes: list[int]) -> list[dict]:
    rows = []
    for name in MODELS:
        for size in sizes:
            row = {"model": name, "size": size}
            row.update({method: extra_memory(name, size, method) for method in ("gradient", "lrp", "zennit")})
            rows.append(row)
            print(
                f"{name:9s} {size:4d} {row['gradient']:11.0f} {row['lrp']:8.0f} {row['zennit']:10.0f}"
                f" {row['lrp'] / row['gradient']:9.2f} {row['lrp'] / row['zennit']:11.3f}",
                flush=True,
            )
    return rows


def trained_scale_(model: nn.Module) -> nn.Module:
    """Random weights at a trained model's scale, in place (torchvision zero-initialises ViT heads): weights
    N(0, 1/fan_in), biases and embeddings N(0, 0.1), norm weights kept."""
    import math

    with torch.no_grad():
        for key, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0, 1 / math.sqrt(p[0].numel()))
            elif not key.endswith("weight"):
                p.normal_(0, 0.1)
    return model


def without_constants(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every constant a ViT adds set to 0: biases (LayerNorm's β included), class token,
    position embedding."""
    import copy

    stripped = copy.deepcopy(model)
    with torch.no_grad():
        for key, p in stripped.named_parameters():
            if key.endswith("bias") or "pos" in key or "position" in key or "class_token" in key:
                p.zero_()
    return stripped


def build_vit(size: int, batch: int = 8) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """torchvision vit_b_16 at ``size`` with random weights at a trained model's scale, input, targets."""
    import torchvision

    torch.manual_seed(0)
    model = trained_scale_(torchvision.models.vit_b_16(weights=None, image_size=size).eval())
    generator = torch.Generator().manual_seed(1)
    return model, torch.rand(batch, 3, size, size, generator=generator), torch.arange(batch) * 7 % 1000


def vit_rows(sizes: list[int], rounds: dict[int, int]) -> list[dict]:
    """Median seconds of gradient, LRP (AttnLRP) and lxt on vit_b_16, alternating round by round."""
    import copy

    from unhans.explainers import LRP

    rows = []
    for size in sizes:
        model, x, target = build_vit(size)
        frozen = copy.deepcopy(model).requires_grad_(False)
        explainer = LRP(model, "epsilon")
        calls = {"gradient": lambda x, t: plain_gradient(frozen, x, t), "lrp": lambda x, t: explainer(x, t)}
        try:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            from lxt_reference import lxt_explainer

            calls["lxt"] = lxt_explainer(model)
        except ImportError as error:
            print(f"(lxt not timed: {error})")
        seconds = alternate(calls, x, target, rounds[size])
        row = {"size": size, **{key: statistics.median(v) for key, v in seconds.items()}}
        row["lrp/grad"] = statistics.median(a / b for a, b in zip(seconds["lrp"], seconds["gradient"]))
        if "lxt" in seconds:
            row["lxt/lrp"] = statistics.median(a / b for a, b in zip(seconds["lxt"], seconds["lrp"]))
        print(f"vit_b_16  {size:4d} " + " ".join(f"{key} {row[key]:.3f}s" for key in calls)
              + f"  lrp/grad {row['lrp/grad']:.3f}" + (f"  lxt/lrp {row['lxt/lrp']:.2f}" if "lxt/lrp" in row else ""),
              flush=True)
        rows.append(row)
        del calls, model, frozen, explainer
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3×64×64 only, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds per row (default 21 at 64, 5 at 224)")
    parser.add_argument("--no-memory", action="store_true", help="skip the subprocess memory measurement")
    parser.add_argument("--vit", action="store_true", help="only the Vision Transformer rows (vit_b_16, AttnLRP, lxt)")
    args = parser.parse_args()
    if args.vit:
        sizes = [64] if args.quick else [64, 224]
        rows = vit_rows(sizes, {64: args.rounds or (3 if args.quick else 11), 224: args.rounds or 3})
        result = {f"vit_b_16_{row['size']}": f"{row['lrp/grad']:.3f}" for row in rows}
        if all("lxt/lrp" in row for row in rows):
            result["lxt_speedup"] = f"{min(row['lxt/lrp'] for row in rows):.2f}"
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 8")
        print("RESULT " + " ".join(f"{key}={value}" for key, value in result.items()))
        return
    sizes = [64] if args.quick else [64, 224]
    rounds = {64: 3, 224: 3} if args.quick else {64: 21, 224: 5}
    if args.rounds:
        rounds = {size: args.rounds for size in rounds}
    default_threads = torch.get_num_threads()
    threads = sorted({1, default_threads})

    print(f"torch {torch.__version__}, default threads {default_threads}, batch 8, median seconds per explanation")
    print(f"{'model':9s} {'size':>4s} {'threads':>7s} " + " ".join(f"{m:>10s}" for m in METHODS)
          + f" {'lrp/grad':>9s} {'lrp/grad_cl':>11s} {'zennit/lrp':>10s}")  # fmt: skip
    rows = time_rows(sizes, rounds, threads)
    result: dict[str, str] = {}
    for size in sizes:
        for name in MODELS:
            mine = [row for row in rows if row["model"] == name and row["size"] == size]
            result[f"{name}_{size}"] = f"{max(row['lrp/grad'] for row in mine):.3f}"
    result["zennit_speedup"] = f"{min(row['zennit/lrp'] for row in rows):.2f}"
    if not args.no_memory:
        print("\nextra peak memory of one explanation (MB, fresh process, 1 thread)")
        print(f"{'model':9s} {'size':>4s} {'gradient':>11s} {'lrp':>8s} {'zennit':>10s}"
              f" {'lrp/grad':>9s} {'lrp/zennit':>11s}")  # fmt: skip
        memory = memory_rows(sizes)
        result["zennit_memory"] = f"{max(row['lrp'] / row['zennit'] for row in memory):.3f}"
        result["gradient_memory"] = f"{max(row['lrp'] / row['gradient'] for row in memory):.2f}"
    for row in rows:
        key = f"{row['model']}_{row['size']}_t{row['threads']}"
        result[key] = f"{row['lrp/grad']:.3f}"
        result[f"{key}_vs_cl"] = f"{row['lrp/grad_cl']:.3f}"
        result[f"{key}_zennit"] = f"{row['zennit/lrp']:.2f}"
    print("RESULT " + " ".join(f"{key}={value}" for key, value in result.items()))


if __name__ == "__main__":
    main()
