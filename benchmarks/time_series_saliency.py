"""Seed 004's time-series saliency benchmark, with Temporal Saliency Rescaling (issue #15).

For each seed, dataset (Middle Box, Moving Box; Gaussian background, 50 features × 50 steps,
1000 training and 100 test series) and model (a TCN, an LSTM; trained here), every method's
saliency of the test series (explaining the true label) is judged by masking
(:mod:`unhans.explainers.time_series_masking`): AUP, AUR, AUPR and the accuracy-drop AUC, on the
scale of seed 004's Table 1. Methods: Grad, IG, SmoothGrad, LRP (TCN only: an LSTM raises
``UnsupportedModelError``), occlusion (one time step of every feature at a time, as the seed's
code), random (permuted Grad saliency), and TSR over Grad, IG and LRP.

Speed: TSR over Grad on the TCN against the same algorithm run as a straightforward loop that
calls the base explainer once per time step and once per (step, feature), each call on the
whole batch of test series (the authors' loop, and the charitable baseline), measured on the
same series in the same process; and against a loop per series (Algorithm 1 as written, one
input at a time), on the first few series. ``loop_speedup_bound`` is the most any batching of
the same passes could gain over the batched loop on this machine: the loop's time over the
passes' time at the plain gradient's rate on batches of 512.

    python benchmarks/time_series_saliency.py              # 3 seeds
    python benchmarks/time_series_saliency.py --seeds 0    # one seed
    python benchmarks/time_series_saliency.py --seeds 3,4,5,6,7,8 --models tcn --methods grad,tsr_grad

Ends with ``RESULT tsr_grad_aupr_middle=<x> grad_aupr_middle=<x> tsr_grad_aupr_moving=<x>
grad_aupr_moving=<x> tsr_speedup=<x> ...`` (seed means; ``tsr_beats_grad=<k>/<n>`` counts the
(seed, dataset) pairs where TSR + Grad beats Grad on AUPR on the TCN).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from time_series_data import make_train_test  # noqa: E402
from time_series_models import accuracy, make_model, train  # noqa: E402

DATASETS = {"middle": "middle_box", "moving": "moving_box"}
ALPHA = 0.5
IG_STEPS = 16


def base_explainer(model, method: str):
    from unhans.explainers import LRP, Gradient, IntegratedGradients, Occlusion, SmoothGrad

    if method == "grad":
        return Gradient(model)
    if method == "ig":
        return IntegratedGradients(model, steps=IG_STEPS)
    if method == "smoothgrad":
        return SmoothGrad(model)
    if method == "lrp":
        return LRP(model)
    if method == "occlusion":
        return Occlusion(model, window=(50, 1))  # every feature of one time step (the seed's sliding window)
    raise ValueError(method)


def explainer(model, method: str):
    from unhans.explainers import TemporalSaliencyRescaling

    if method.startswith("tsr_"):
        return TemporalSaliencyRescaling(base_explainer(model, method[4:]), alpha=ALPHA, max_batch=512)
    return base_explainer(model, method)


def saliency(model, method: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    explain = explainer(model, method)
    return torch.cat([explain(x[i:i + 50], y[i:i + 50]).detach() for i in range(0, len(x), 50)])


def loop_tsr(base, x: torch.Tensor, target: torch.Tensor, alpha: float, fill: float = 0.0) -> torch.Tensor:
    """Algorithm 1 as a plain loop: one base call per time step, then one per (kept step, feature),
    each on every series of ``x`` that keeps that step."""
    b, f, t = x.shape
    reference = base(x, target).detach()
    time_scores = torch.zeros(b, t)
    for step in range(t):
        masked = x.clone()
        masked[:, :, step] = fill
        time_scores[:, step] = (base(masked, target).detach() - reference).abs().flatten(1).sum(1)
    low, high = time_scores.amin(1, keepdim=True), time_scores.amax(1, keepdim=True)
    time_scores = torch.where(high > low, (time_scores - low) / (high - low).clamp_min(1e-30), torch.zeros_like(time_scores))
    out = torch.zeros_like(x)
    for step in range(t):
        rows = torch.nonzero(time_scores[:, step] > alpha).flatten()
        if not len(rows):
            continue
        feature_scores = torch.zeros(len(rows), f)
        for feature in range(f):
            masked = x[rows].clone()
            masked[:, feature, step] = fill
            feature_scores[:, feature] = (base(masked, target[rows]).detach() - reference[rows]).abs().flatten(1).sum(1)
        low, high = feature_scores.amin(1, keepdim=True), feature_scores.amax(1, keepdim=True)
        scaled = torch.where(high > low, (feature_scores - low) / (high - low).clamp_min(1e-30), torch.zeros_like(feature_scores))
        out[rows, :, step] = scaled * time_scores[rows, step][:, None]
    return out


def speed(model, x: torch.Tensor, y: torch.Tensor, per_sample: int) -> dict:
    """Seconds of batched TSR over Grad vs. the per-step loop (whole batch per call) and the
    loop per series; the largest difference between their maps; and the compute floor: seconds
    per input of the plain gradient on batches of 512 (what no batching of the same passes beats)."""
    from unhans.explainers import Gradient, TemporalSaliencyRescaling

    base = Gradient(model)
    tsr = TemporalSaliencyRescaling(base, alpha=ALPHA, max_batch=512)
    tsr(x[:4], y[:4])  # warm-up
    start = time.perf_counter()
    batched = tsr(x, y)
    batched_s = time.perf_counter() - start
    passes = tsr.last_passes
    start = time.perf_counter()
    looped = loop_tsr(base, x, y, ALPHA)
    loop_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(per_sample):
        loop_tsr(base, x[i:i + 1], y[i:i + 1], ALPHA)
    per_sample_s = (time.perf_counter() - start) / per_sample * len(x)
    big, big_y = x.repeat(-(-512 // len(x)), 1, 1)[:512], y.repeat(-(-512 // len(y)))[:512]
    base(big, big_y)  # warm-up
    start = time.perf_counter()
    for _ in range(5):
        base(big, big_y)
    floor_s = (time.perf_counter() - start) / (5 * 512)
    return {"batched_s": batched_s, "loop_s": loop_s, "per_sample_loop_s": per_sample_s, "passes": passes,
            "max_difference": float((batched - looped).abs().max()), "floor_s": floor_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--models", default="tcn,lstm", help="comma-separated models (default tcn,lstm)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated methods to run (default all; random needs grad)")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = {"tcn": ["grad", "ig", "smoothgrad", "lrp", "occlusion", "random", "tsr_grad", "tsr_ig", "tsr_lrp"],
               "lstm": ["grad", "ig", "smoothgrad", "occlusion", "random", "tsr_grad", "tsr_ig"]}
    wanted = None if args.methods is None else set(args.methods.split(","))
    methods = {kind: [m for m in names if wanted is None or m in wanted]
               for kind, names in methods.items() if kind in args.models.split(",")}
    rows, timing = [], None
    header = f"{'seed':>4} {'data':<7} {'model':<5} {'acc':>5} {'method':<11} {'AUPR':>6} {'AUP':>6} {'AUR':>6} {'AUC':>6} {'s':>6}"
    print(header, flush=True)
    for seed in seeds:
        for short, name in DATASETS.items():
            train_set, test_set = make_train_test(name, "gaussian", args.train, args.test, seed=seed)
            x, y, informative = test_set.tensors()
            for kind, names in methods.items():
                from unhans.explainers.time_series_masking import evaluate_saliency, random_baseline

                model = train(make_model(kind, seed=seed), train_set.x, train_set.y, epochs=args.epochs, seed=seed)
                acc = accuracy(model, x, y)
                grad = None
                for method in names:
                    start = time.perf_counter()
                    if method == "random":
                        result = random_baseline(model, x, y, grad, informative, test_set.background_sampler, seed=seed)
                    else:
                        values = saliency(model, method, x, y)
                        grad = values if method == "grad" else grad
                        result = evaluate_saliency(model, x, y, values, informative, test_set.background_sampler, seed=seed)
                    seconds = time.perf_counter() - start
                    rows.append({"seed": seed, "data": short, "model": kind, "method": method, "acc": acc,
                                 "aupr": result.aupr, "aup": result.aup, "aur": result.aur, "auc": result.auc})
                    print(f"{seed:>4} {short:<7} {kind:<5} {acc:5.2f} {method:<11} {result.aupr:6.3f} {result.aup:6.3f} "
                          f"{result.aur:6.3f} {result.auc:6.1f} {seconds:6.1f}", flush=True)
                if kind == "tcn" and timing is None:
                    timing = speed(model, x, y, per_sample=5)
                    print(f"speed: TSR+Grad batched {timing['batched_s']:.2f} s ({timing['passes']} base passes), "
                          f"per-step loop {timing['loop_s']:.2f} s, per-series loop {timing['per_sample_loop_s']:.1f} s "
                          f"(extrapolated from 5 series); max |difference| {timing['max_difference']:.2e}; "
                          f"{1e6 * timing['batched_s'] / timing['passes']:.1f} us per TSR pass, "
                          f"{1e6 * timing['loop_s'] / timing['passes']:.1f} us per loop pass, plain gradient on "
                          f"batches of 512: {1e6 * timing['floor_s']:.1f} us per input", flush=True)

    def mean(model, data, method, key):
        values = [r[key] for r in rows if r["model"] == model and r["data"] == data and r["method"] == method]
        return float(np.mean(values)) if values else float("nan")

    print("\nmeans over seeds (AUPR / AUP / AUR / AUC)")
    for kind, names in methods.items():
        for short in DATASETS:
            for method in names:
                print(f"{kind:<5} {short:<7} {method:<11} " + " / ".join(
                    f"{mean(kind, short, method, k):.3f}" if k != "auc" else f"{mean(kind, short, method, k):.1f}"
                    for k in ("aupr", "aup", "aur", "auc")))
    per_pair = [(r["seed"], r["data"], r["aupr"], next(g["aupr"] for g in rows if g["model"] == "tcn"
                                                        and g["method"] == "grad" and g["seed"] == r["seed"]
                                                        and g["data"] == r["data"]))
                for r in rows if r["model"] == "tcn" and r["method"] == "tsr_grad"]
    wins = [(seed, data) for seed, data, tsr, grad in per_pair if tsr > grad]
    print("TSR + Grad against Grad (TCN, AUPR): " + ", ".join(f"seed {s} {d} {t:.3f}/{g:.3f}" for s, d, t, g in per_pair))
    result = {
        "tsr_grad_aupr_middle": mean("tcn", "middle", "tsr_grad", "aupr"),
        "grad_aupr_middle": mean("tcn", "middle", "grad", "aupr"),
        "tsr_grad_aupr_moving": mean("tcn", "moving", "tsr_grad", "aupr"),
        "grad_aupr_moving": mean("tcn", "moving", "grad", "aupr"),
        "tsr_speedup": timing["loop_s"] / timing["batched_s"] if timing else float("nan"),
        "tsr_speedup_per_series": timing["per_sample_loop_s"] / timing["batched_s"] if timing else float("nan"),
        "loop_speedup_bound": timing["loop_s"] / (timing["passes"] * timing["floor_s"]) if timing else float("nan"),
        "tsr_lrp_aupr_middle": mean("tcn", "middle", "tsr_lrp", "aupr"),
        "lrp_aupr_middle": mean("tcn", "middle", "lrp", "aupr"),
        "random_aupr_middle": mean("tcn", "middle", "random", "aupr"),
    }
    print("RESULT " + " ".join(f"{k}={v:.3f}" for k, v in result.items())
          + f" tsr_beats_grad={len(wins)}/{len(seeds) * len(DATASETS)}")


if __name__ == "__main__":
    main()
