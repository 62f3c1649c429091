"""Mislabel detection: `mislabel_score` from one training run against cleanlab on 5-fold out-of-fold probabilities.

Issue #6, item 1. Digits at 32x32 (the embedded dataset, no corner tag, clean labels), one small
CNN (`pipeline.small_cnn.small_cnn`) and one shared untuned recipe (`pipeline.training.train_classifier`
with the `TrainingConfig()` defaults: Adam, 25 epochs, batch 64, on the CPU). Noise is injected here at
20% and 40%:

- ``symmetric``: `pipeline.defects.flip_labels` (a uniform random sample moves to a uniform other class);
- ``asymmetric``: `pipeline.defects.flip_labels` (pair flips 1<->7, 3<->8, 4<->9, 5<->6; 0 and 2 stay);
- ``instance``: a uniform random sample moves to its *most confusable class*, the class other than its
  true one with the largest out-of-fold probability of a clean model (the same recipe, 5 folds, trained
  on the clean labels once per seed; its fits are setup cost and not charged to any method).

Methods, scored against the flipped mask: ours (`mislabel_score`, `mislabel_suspect`) from the one
training run on all samples; cleanlab 2.x `get_label_quality_scores` (a score) and `find_label_issues`
(a set) on 5-fold out-of-fold probabilities of the same recipe (defaults, untuned); argmax != label on
the same out-of-fold probabilities (a set); a seeded random score. AUROC and precision@n (n = number of
flipped labels) for scores, precision and recall for sets; cost = model fits and CPU seconds
(``time.process_time``, torch and BLAS limited to one thread: faster than two on this 2-core machine).

    python benchmarks/mislabel.py            # 3 seeds x 3 kinds x 2 rates, 123 fits (~15 min on 2 cores)
    python benchmarks/mislabel.py --quick    # seed 0, asymmetric and instance at 40% (~2.5 min)

Ends with one line: RESULT min_auroc_margin=<ours - cleanlab, worst setting> asym40_p_at_n_margin=<...> ...
cleanlab is a benchmark-only dependency (``pip install cleanlab``); the engine never imports it.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import numpy as np

KINDS = ("symmetric", "asymmetric", "instance")
RATES = (0.2, 0.4)
FOLDS = 5
NUM_CLASSES = 10


@dataclass
class Cost:
    fits: int = 0
    cpu_seconds: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.fits + other.fits, self.cpu_seconds + other.cpu_seconds)


@dataclass
class Outcome:
    """One method in one setting: a score (auroc, p_at_n) and/or a set (precision, recall), and its cost."""

    auroc: float = float("nan")
    p_at_n: float = float("nan")
    precision: float = float("nan")
    recall: float = float("nan")
    cost: Cost = field(default_factory=Cost)


def clean_training_set(seed: int):
    """Digits at 32x32 with clean labels and no corner tag; split and upsampling as in the audit."""
    from unhans.pipeline.config import from_dict
    from unhans.pipeline.digits import load_digits_dataset

    config = from_dict({"dataset": {"seed": seed, "image_size": 32, "label_noise": {"rate": 0.0},
                                    "artifact": {"fraction": 0.0}}})
    return load_digits_dataset(config.dataset).train


def fit(images: np.ndarray, labels: np.ndarray, seed: int, recorder=None):
    """The shared recipe: a fresh small CNN trained with ``TrainingConfig()`` defaults; returns (model, Cost)."""
    import torch

    from unhans.pipeline.config import TrainingConfig
    from unhans.pipeline.small_cnn import small_cnn
    from unhans.pipeline.training import train_classifier

    start = time.process_time()
    torch.manual_seed(seed)
    model = small_cnn(in_channels=images.shape[1], num_classes=NUM_CLASSES, image_size=images.shape[-1])
    config = TrainingConfig(seed=seed, device="cpu")
    train_classifier(model, images, labels, config, device="cpu", recorder=recorder, progress=False)
    return model, Cost(1, time.process_time() - start)


def predict_proba(model, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate([torch.softmax(model(torch.from_numpy(images[s:s + batch_size])), 1).numpy()
                               for s in range(0, len(images), batch_size)])


def out_of_fold_probabilities(images: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, Cost]:
    """(N, K) probabilities, each sample's from the model of the fold that did not train on it."""
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros((len(labels), NUM_CLASSES), np.float32)
    cost = Cost()
    for train, held_out in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(images, labels):
        model, c = fit(images[train], labels[train], seed)
        start = time.process_time()
        probs[held_out] = predict_proba(model, images[held_out])
        cost = cost + c + Cost(0, time.process_time() - start)
    return probs, cost


def noisy_labels(true: np.ndarray, kind: str, rate: float, seed: int, clean_probs: np.ndarray | None) -> np.ndarray:
    """Inject ``kind`` noise at ``rate`` into ``true`` (deterministic in seed, kind and rate)."""
    from unhans.pipeline.defects import flip_labels

    rng = np.random.default_rng([seed, KINDS.index(kind), int(round(rate * 100))])
    if kind in ("symmetric", "asymmetric"):
        return flip_labels(true, rate, kind, NUM_CLASSES, rng)
    chosen = rng.choice(len(true), size=int(round(rate * len(true))), replace=False)
    confusion = clean_probs[chosen].copy()
    confusion[np.arange(len(chosen)), true[chosen]] = -np.inf
    noisy = true.copy()
    noisy[chosen] = confusion.argmax(1)
    return noisy


def score_outcome(flipped: np.ndarray, score: np.ndarray, cost: Cost) -> Outcome:
    """AUROC and precision@n of a score (higher = more likely flipped)."""
    from sklearn.metrics import roc_auc_score

    n = int(flipped.sum())
    top = np.argsort(-score, kind="stable")[:n]
    return Outcome(auroc=float(roc_auc_score(flipped, score)), p_at_n=float(flipped[top].mean()), cost=cost)


def set_outcome(flipped: np.ndarray, selected: np.ndarray, cost: Cost, base: Outcome | None = None) -> Outcome:
    """Precision and recall of a selected set (boolean mask), added to ``base`` if given."""
    out = base if base is not None else Outcome(cost=cost)
    out.precision = float(flipped[selected].mean()) if selected.any() else float("nan")
    out.recall = float(selected[flipped].mean())
    return out


def run_setting(images, true, noisy, seed: int) -> dict[str, Outcome]:
    """Every method on one noisy labelling."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    from unhans.spray.dynamics import DynamicsRecorder

    flipped = noisy != true
    results = {}

    recorder = DynamicsRecorder(num_samples=len(noisy), num_classes=NUM_CLASSES)
    _, cost = fit(images, noisy, seed, recorder=recorder)
    start = time.process_time()
    table = recorder.statistics()
    cost = cost + Cost(0, time.process_time() - start)
    ours = score_outcome(flipped, table.column("mislabel_score").to_numpy(), cost)
    results["ours"] = set_outcome(flipped, table.column("mislabel_suspect").to_numpy(zero_copy_only=False), cost, ours)

    probs, oof_cost = out_of_fold_probabilities(images, noisy, seed)
    start = time.process_time()
    quality = get_label_quality_scores(noisy, probs)
    scores_cost = oof_cost + Cost(0, time.process_time() - start)
    results["cl_scores"] = score_outcome(flipped, -quality, scores_cost)
    start = time.process_time()
    issues = find_label_issues(noisy, probs, n_jobs=1)
    results["cl_issues"] = set_outcome(flipped, issues, oof_cost + Cost(0, time.process_time() - start))
    results["argmax"] = set_outcome(flipped, probs.argmax(1) != noisy, oof_cost)

    rng = np.random.default_rng([seed, 99])
    results["random"] = score_outcome(flipped, rng.random(len(noisy)), Cost())
    return results


METHODS = {  # name: (label, metrics shown)
    "ours": ("ours mislabel_score/suspect", ("auroc", "p_at_n", "precision", "recall")),
    "cl_scores": ("cleanlab get_label_quality_scores", ("auroc", "p_at_n")),
    "cl_issues": ("cleanlab find_label_issues", ("precision", "recall")),
    "argmax": ("argmax != label (out-of-fold)", ("precision", "recall")),
    "random": ("random", ("auroc", "p_at_n")),
}


def print_table(rows: list[tuple[str, float, int, dict[str, Outcome]]]) -> None:
    """One line per (setting, method): mean over seeds of every metric and cost."""
    settings = sorted({(kind, rate) for kind, rate, _, _ in rows}, key=lambda s: (KINDS.index(s[0]), s[1]))
    print(f"\n{'setting':16s} {'method':36s} {'AUROC':>6s} {'P@n':>6s} {'prec':>6s} {'recall':>6s} "
          f"{'fits':>5s} {'CPU-s':>7s}   (mean over {len({s for _, _, s, _ in rows})} seed(s))")
    for kind, rate in settings:
        group = [r for k, q, _, r in rows if (k, q) == (kind, rate)]
        for name, (label, shown) in METHODS.items():
            cells = []
            for metric in ("auroc", "p_at_n", "precision", "recall"):
                value = np.mean([getattr(r[name], metric) for r in group])
                cells.append(f"{value:6.3f}" if metric in shown else f"{'':6s}")
            fits = np.mean([r[name].cost.fits for r in group])
            cpu = np.mean([r[name].cost.cpu_seconds for r in group])
            print(f"{kind + f' {rate:.0%}':16s} {label:36s} {' '.join(cells)} {fits:5.0f} {cpu:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seed 0, asymmetric and instance noise at 40%% only")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 (0 with --quick)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=None)
    parser.add_argument("--rates", nargs="+", type=float, default=None)
    args = parser.parse_args()
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    kinds = args.kinds or (["asymmetric", "instance"] if args.quick else list(KINDS))
    rates = args.rates or ([0.4] if args.quick else list(RATES))

    from unhans.pipeline.devices import limit_threads

    limit_threads(1)
    wall = time.perf_counter()
    rows = []
    print(f"{'kind':10s} {'rate':>4s} {'seed':>4s} {'flipped':>7s} {'ours AUROC':>10s} {'cl AUROC':>8s} "
          f"{'ours P@n':>8s} {'cl P@n':>6s} {'seconds':>7s}")
    for seed in seeds:
        data = clean_training_set(seed)
        clean_probs = out_of_fold_probabilities(data.images, data.true_labels, seed)[0] if "instance" in kinds else None
        for kind in kinds:
            for rate in rates:
                start = time.perf_counter()
                noisy = noisy_labels(data.true_labels, kind, rate, seed, clean_probs)
                result = run_setting(data.images, data.true_labels, noisy, seed)
                rows.append((kind, rate, seed, result))
                ours, cl = result["ours"], result["cl_scores"]
                print(f"{kind:10s} {rate:4.0%} {seed:4d} {int((noisy != data.true_labels).sum()):7d} "
                      f"{ours.auroc:10.3f} {cl.auroc:8.3f} {ours.p_at_n:8.3f} {cl.p_at_n:6.3f} "
                      f"{time.perf_counter() - start:7.1f}", flush=True)
    print_table(rows)

    def margin(metric: str, kind: str, rate: float) -> float:
        group = [r for k, q, _, r in rows if (k, q) == (kind, rate)]
        return float(np.mean([getattr(r["ours"], metric) - getattr(r["cl_scores"], metric) for r in group]))

    settings = sorted({(k, q) for k, q, _, _ in rows})
    auroc_margins = {s: margin("auroc", *s) for s in settings}
    worst = min(auroc_margins, key=auroc_margins.get)
    worst_single = min(r["ours"].auroc - r["cl_scores"].auroc for _, _, _, r in rows)
    asym40 = margin("p_at_n", "asymmetric", 0.4) if ("asymmetric", 0.4) in settings else float("nan")
    minutes = (time.perf_counter() - wall) / 60
    print(f"\nwall time {minutes:.1f} min; worst AUROC margin (seed mean) at {worst[0]} {worst[1]:.0%}")
    print(f"RESULT min_auroc_margin={auroc_margins[worst]:.4f} asym40_p_at_n_margin={asym40:.4f} "
          f"min_auroc_margin_single_seed={worst_single:.4f} settings={len(settings)} seeds={len(seeds)} "
          f"wall_minutes={minutes:.1f}")


if __name__ == "__main__":
    main()
