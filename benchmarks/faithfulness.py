"""Faithfulness checks: speed against Quantus on the same work, AOPC per explainer, cost in the audit (issue #13).

1. **The audit's cost.** The embedded audit run with the check and without it
   (``faithfulness.enabled: false``), alternately, ``--rounds`` times each; the median wall times
   and their ratio. The digits model and inputs of the first run are used below.
2. **AOPC table** (as seed 003's Fig. 6): on the audit's stratified subsample (256 samples), region
   perturbation with the audit's settings (4-pixel squares, blur, 8 steps, logits) for LRP
   (epsilon_plus_flat), gradient × input, integrated gradients, occlusion, the gradient and a
   random ordering; mean AOPC and the area between LeRF and MoRF.
3. **Speed against Quantus 0.6** on the same work, in this process, on the digits model and on
   torchvision resnet18 (random weights, BatchNorm statistics calibrated on random inputs) at
   3×64×64, 256 samples each:
   - pixel-flipping: ``quantus.PixelFlipping(features_in_step=…, perturb_baseline="black")`` on given
     LRP heatmaps against :func:`unhans.explainers.faithfulness.pixel_flipping` with as many steps
     (64 on the digits, 48 on resnet18: Quantus needs its step to divide the pixel count), so both
     run the same number of forward passes (on the single-channel digits the curves are compared
     too; LRP heatmaps have exact ties, which the two sorts may order differently); and the bare
     forward passes of as many inputs, the floor for any implementation;
   - MPRT: ``quantus.MPRT()`` (top-down cascade, Spearman of |R|) with the unhans LRP adapter as
     ``explain_func`` against :func:`unhans.explainers.randomization.parameter_randomization`, and
     the time of the LRP explanations both must compute (one per layer and the trained model's).

    python benchmarks/faithfulness.py              # everything (~15 min on 2 cores)
    python benchmarks/faithfulness.py --rounds 1   # one audit pair

Ends with ``RESULT pf_speedup=<x> mprt_speedup=<x> lrp_aopc=<x> random_aopc=<x> ...`` (speed-ups are the
smaller of the two models; per-model values and the audit overhead follow).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def audit_times(root: Path, rounds: int) -> tuple[float, float, Path]:
    from unhans.pipeline import run_audit
    from unhans.pipeline.config import from_dict

    on, off = [], []
    for r in range(rounds):
        for enabled, times in ((True, on), (False, off)):
            out = root / f"{'on' if enabled else 'off'}-{r}"
            start = time.perf_counter()
            run_audit(from_dict({"faithfulness": {"enabled": enabled}}), out, quiet=True)
            times.append(time.perf_counter() - start)
            print(f"audit faithfulness={'on ' if enabled else 'off'} round {r}: {times[-1]:.1f} s", flush=True)
    return statistics.median(on), statistics.median(off), root / "on-0"


def digits_setup(run: Path):
    import json

    from unhans.pipeline.small_cnn import small_cnn

    manifest = json.loads((run / "manifest.json").read_text())
    model = small_cnn(**manifest["model"]["kwargs"])
    model.load_state_dict(torch.load(run / "model.pt", weights_only=True))
    model.eval()
    ids = json.loads((run / "faithfulness.json").read_text())["sample_ids"]
    x = torch.from_numpy(np.load(run / "inputs" / "images.npy")[ids]).float()
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def resnet_setup(n: int = 256):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    model.train()
    with torch.no_grad():  # calibrate the BatchNorm statistics on random inputs
        for _ in range(8):
            model(torch.randn(32, 3, 64, 64))
    model.eval()
    x = torch.randn(n, 3, 64, 64)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def aopc_table(model, x, y) -> dict[str, tuple[float, float]]:
    from unhans.explainers.faithfulness import abpc, pixel_flipping
    from unhans.explainers.registry import make_explainer

    methods = {"lrp": {"composite": "epsilon_plus_flat"}, "gradient_x_input": {}, "integrated_gradients": {},
               "occlusion": {}, "gradient": {}}
    options = dict(region=4, regions_per_step=8, replacement="blur", batch_size=256)
    table = {}
    for name, kwargs in methods.items():
        relevance = make_explainer(model, name, **kwargs)(x, y).sum(1)
        morf = pixel_flipping(model, x, y, relevance, **options)
        lerf = pixel_flipping(model, x, y, relevance, order="lerf", **options)
        table[name] = (float(morf.aopc().mean()), float(abpc(morf, lerf).mean()))
    generator = torch.Generator().manual_seed(0)
    random = pixel_flipping(model, x, y, torch.zeros(len(x), *x.shape[2:]), order="random", generator=generator,
                            **options)
    table["random"] = (float(random.aopc().mean()), float("nan"))
    return table


def forward_floor(model, x, steps: int) -> float:
    """Seconds of the model's forward passes alone on ``steps`` copies of ``x`` (batches of 256): what any
    pixel-flipping of that many steps must spend, whatever it does around them."""
    inputs = x.repeat(steps, *[1] * (x.ndim - 1))
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(inputs), 256):
            model(inputs[i:i + 256])
    return time.perf_counter() - start


def same_steps(channels: int, pixels: int, target: int = 64) -> tuple[int, int, int]:
    """(steps, Quantus features_in_step, unhans pixels per step) giving both the same number of steps, about
    ``target``. Quantus flips single features (a pixel's channels one by one) and needs features_in_step to
    divide the pixel count; unhans flips whole pixels."""
    features = channels * pixels
    for step in range(max(1, features // target), pixels + 1):
        if pixels % step == 0:
            steps = -(-features // step)
            per_step = -(-pixels // steps)
            if -(-pixels // per_step) == steps:
                return steps, step, per_step
    raise ValueError(f"no common step size for {channels} x {pixels}")


def speed(model, x, y, label: str) -> tuple[float, float]:
    import quantus

    from unhans.explainers.faithfulness import pixel_flipping
    from unhans.explainers.quantus_adapter import explain_func
    from unhans.explainers.randomization import parameter_randomization
    from unhans.explainers.registry import make_explainer

    a = explain_func(model, x.numpy(), y.numpy(), method="lrp")
    steps, features_in_step, per_step = same_steps(x.shape[1], int(np.prod(x.shape[2:])))
    start = time.perf_counter()
    ours = pixel_flipping(model, x, y, torch.from_numpy(a), regions_per_step=per_step, replacement="black",
                          batch_size=256)
    t_ours = time.perf_counter() - start
    metric = quantus.PixelFlipping(features_in_step=features_in_step, perturb_baseline="black",
                                   disable_warnings=True)
    start = time.perf_counter()
    theirs = np.array(metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a, device="cpu",
                             softmax=True))
    t_theirs = time.perf_counter() - start
    floor = forward_floor(model, x, steps)
    agree = ""
    if x.shape[1] == 1:
        agree = f", max |difference| of the curves {np.abs(ours.probabilities[:, 1:].numpy() - theirs).max():.1e}"
    print(f"{label} pixel-flipping ({steps} steps, 256 samples): unhans {t_ours:.1f} s, Quantus {t_theirs:.1f} s, "
          f"speed-up {t_theirs / t_ours:.2f}x{agree}; the bare forward passes of the same {steps} x {len(x)} "
          f"inputs alone take {floor:.1f} s (Quantus / floor {t_theirs / floor:.2f})", flush=True)
    pf = t_theirs / t_ours

    def lrp(m, xs, ts):
        return make_explainer(m, "lrp")(xs, ts).sum(1)

    start = time.perf_counter()
    result = parameter_randomization(model, lrp, x, y, seed=42)
    t_ours = time.perf_counter() - start
    mprt = quantus.MPRT(layer_order="top_down", seed=42, disable_warnings=True)
    start = time.perf_counter()
    scores = mprt(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, device="cpu",
                  explain_func=explain_func, explain_func_kwargs={"method": "lrp"})
    t_theirs = time.perf_counter() - start
    gap = max(float(np.abs(result.similarity[i].numpy() - np.array(scores[name])).max())
              for i, name in enumerate(result.layers))
    start = time.perf_counter()
    lrp(model, x, y)
    floor = (time.perf_counter() - start) * (len(result.layers) + 1)
    print(f"{label} MPRT ({len(result.layers)} layers, 256 samples): unhans {t_ours:.1f} s, Quantus {t_theirs:.1f} s, "
          f"speed-up {t_theirs / t_ours:.2f}x, max |difference| of the correlations {gap:.1e}; the "
          f"{len(result.layers) + 1} LRP explanations of 256 samples alone take {floor:.1f} s "
          f"(Quantus / floor {t_theirs / floor:.2f})", flush=True)
    return pf, t_theirs / t_ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="audit pairs (with and without the check)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        on, off, run = audit_times(Path(tmp), args.rounds)
        overhead = on / off - 1
        print(f"audit: {on:.1f} s with the check, {off:.1f} s without (median of {args.rounds}): +{100 * overhead:.1f}%")
        model, x, y = digits_setup(run)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    table = aopc_table(model, x, y)
    print("\nAOPC on the digits model (256 samples, 4-px squares replaced by blur, 8 steps, logits):")
    print(f"{'method':24s} {'AOPC (MoRF)':>12s} {'LeRF-MoRF':>10s}")
    for name, (aopc, between) in sorted(table.items(), key=lambda kv: -kv[1][0]):
        print(f"{name:24s} {aopc:12.3f} {between:10.3f}")
    pf_digits, mprt_digits = speed(model, x, y, "digits")
    pf_resnet, mprt_resnet = speed(*resnet_setup(), "resnet18")
    print(f"RESULT pf_speedup={min(pf_digits, pf_resnet):.2f} mprt_speedup={min(mprt_digits, mprt_resnet):.2f} "
          f"lrp_aopc={table['lrp'][0]:.3f} random_aopc={table['random'][0]:.3f} "
          f"gradient_x_input_aopc={table['gradient_x_input'][0]:.3f} ig_aopc={table['integrated_gradients'][0]:.3f} "
          f"occlusion_aopc={table['occlusion'][0]:.3f} gradient_aopc={table['gradient'][0]:.3f} "
          f"pf_speedup_digits={pf_digits:.2f} pf_speedup_resnet18={pf_resnet:.2f} "
          f"mprt_speedup_digits={mprt_digits:.2f} mprt_speedup_resnet18={mprt_resnet:.2f} "
          f"audit_overhead={overhead:.3f}")


if __name__ == "__main__":
    main()
