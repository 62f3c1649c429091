"""Synthetic time-series saliency benchmark data of seed 004 (issue #15).

Seed 004 (Ismail et al., NeurIPS 2020, "Benchmarking Deep Learning Interpretability in Time
Series Predictions", §4.1 and Fig. 1) defines binary classification data of N = 50 features
× T = 50 time steps in which the class signal lives in a known set of (feature, time) cells,
the *informative box*: μ (= 1) is added there for class 1 and subtracted for class 0. Every
feature is otherwise drawn independently from one of seven background processes. Here the
arrays are laid out (n, F, T), as the explainers read time series; the reference code stores
(n, T, F).

Definitions taken from the authors' code, ``ayaabdelsalam91/TS-Interpretability-Benchmark``
(read, not copied; this is an independent numpy implementation):

**Boxes** (``Scripts/run_benchmark.py``: ``ImpTimeSteps``, ``ImpFeatures``, ``StartImp*``,
``Loc1/Loc2``, ``FreezeType``, ``isMoving``; placement in ``Scripts/createSimulationDataProcesses.py``)

===================== ========== ============ ===================================================
dataset               time steps features     position
===================== ========== ============ ===================================================
middle                30         30           time 10–39, features 10–39
small_middle          14         14           time 18–31, features 18–31
moving_middle         30         30           start drawn per sample, uniform in [0, 50−30)
moving_small_middle   15         15           start drawn per sample, uniform in [0, 50−15)
rare_time             6          40           time 22–27, features 5–44
moving_rare_time      6          40           both starts drawn per sample (as the repo does)
rare_feature          40         6            time 5–44, features 22–27
moving_rare_feature   40         6            both starts drawn per sample (as the repo does)
positional_time       20         20           time start random in [0, 30); features 1–20 for
                                              class 1, 29–48 for class 0; +μ for both classes
positional_feature    20         20           feature start random in [0, 30); time 1–20 for
                                              class 1, 29–48 for class 0; +μ for both classes
===================== ========== ============ ===================================================

"Moving" starts are ``randint(50 − size)``, so the last possible start is never drawn, as in the
repo. The two positional sets carry the class in the box's *position* (seed Fig. 1: "signal
difference: position"), not its sign: the box is added with +μ for both classes. Their names
follow the repo, where ``PostionalTime`` (``FreezeType="Feature"``) fixes the features per class
and lets the box wander in time, and ``PostionalFeature`` the reverse; this matches the seed's
Fig. 1 table ("Positional Box T": position over time *different* across samples, over features
*same*). Seed Fig. 1 marks the moving rare sets as moving along one axis only; the repo moves
both starts, which is followed here.

**Processes** (``createSample`` in ``Scripts/createSimulationDataProcesses.py`` with the
defaults of ``Scripts/run_benchmark.py``, realised there by the ``timesynth`` package, which is
not needed here). Except for ``gaussian`` (the repo's "Box" sets: N(0, 1), box cells N(±μ, 1))
every feature gets Gaussian observation noise of std 0.3 (``hasNoise``), and the time stamps
are *irregular*: per sample, 50 of 100 evenly spaced points on [0, 20] are kept at random and
each is jittered by N(0, 0.2²) (timesynth's ``sample_irregular_time(num_points=2T,
keep_percentage=50)``), shared by the sample's 50 features (hence the vertical stripes of the
harmonic sets in seed Fig. 2).

- ``autoregressive``: AR(1), φ = 0.9, innovation std 0.5, started from 0 (index-based);
- ``car``: continuous AR, ``x_k = φ^Δt x_{k−1} + σ √(1 − φ^Δt) ε``, φ = 0.9, σ = 0.01,
  x₀ = 0.01, Δt the gap between the irregular time stamps (timesynth's ``CAR`` formula);
- ``gaussian_process``: GP with Matérn-3/2 kernel (length scale 1, variance 1) at the time stamps;
- ``harmonic``: ``sin(2π·2·t)`` at the time stamps;
- ``pseudo_periodic``: ``a·sin(2π f t)``, a ~ N(1, 0.5²) and f ~ N(2, 0.01²) drawn per point;
- ``narma``: NARMA of order 10, ``y_{k+1} = 0.3 y_k + 0.05 y_k Σ_{i<10} y_{k−i} + 1.5 u_{k−9} u_k + 0.1``,
  u ~ U(0, 0.5), zero initial conditions (timesynth's coefficients; its implementation sums
  a truncated window ``y[i−n:n]`` and seeds every instance with 42, so all its features share
  one input sequence — here the textbook sum and independent inputs per feature are used).

The repo min-max scales the data with statistics of the training set before training; here the
raw values are returned (the models below train on them directly).

**Masking** ("replace with the original distribution", seed §4.2): the repo draws a fresh
background sample (``Scripts/Helper.py: generateNewSample``: the process without the box) and
copies its values into the masked cells. :attr:`TimeSeriesSet.background_sampler` draws such
fresh backgrounds; :mod:`unhans.explainers.time_series_masking` consumes it.

Everything is deterministic per ``seed`` (an int or a sequence of ints, as numpy's
``SeedSequence`` takes them): labels, box positions and background come from independent
child streams.

    python benchmarks/time_series_data.py                      # every dataset, Gaussian
    python benchmarks/time_series_data.py --process narma --n 2000
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence, Union

import numpy as np

N_FEATURES = 50
N_TIME = 50
MU = 1.0
NOISE_STD = 0.3  # observation noise of every process but "gaussian" (repo: hasNoise, GaussianNoise(std=0.3))
STOP_TIME = 20.0  # timesynth TimeSampler(stop_time=20)

Seed = Union[int, Sequence[int], np.random.SeedSequence, np.random.Generator]

PROCESSES = ("gaussian", "autoregressive", "car", "gaussian_process", "harmonic", "pseudo_periodic", "narma")


@dataclass(frozen=True)
class BoxSpec:
    """Where a dataset's informative box lies (see the module docstring's table).

    ``time_start``/``feature_start`` ``None``: drawn per sample uniformly in ``[0, 50 − size)``.
    ``positional``: ``"feature"`` or ``"time"``, the axis whose start is fixed per class
    (``class_starts`` = (start for class 1, start for class 0)); the box is then +μ for both classes.
    """

    time_size: int
    feature_size: int
    time_start: int | None = None
    feature_start: int | None = None
    positional: str | None = None
    class_starts: tuple[int, int] = (1, 29)


DATASETS: dict[str, BoxSpec] = {
    "middle": BoxSpec(30, 30, 10, 10),
    "small_middle": BoxSpec(14, 14, 18, 18),
    "moving_middle": BoxSpec(30, 30),
    "moving_small_middle": BoxSpec(15, 15),
    "rare_time": BoxSpec(6, 40, 22, 5),
    "moving_rare_time": BoxSpec(6, 40),
    "rare_feature": BoxSpec(40, 6, 5, 22),
    "moving_rare_feature": BoxSpec(40, 6),
    "positional_time": BoxSpec(20, 20, positional="feature"),
    "positional_feature": BoxSpec(20, 20, positional="time"),
}
#: the paper's names for the two sets of seed Table 1
ALIASES = {"middle_box": "middle", "moving_box": "moving_middle"}


def dataset_names() -> list[str]:
    return list(DATASETS)


def _spec(name: str) -> tuple[str, BoxSpec]:
    key = name.lower().replace(" ", "_").replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS) + sorted(ALIASES)}")
    return key, DATASETS[key]


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# background processes: each returns float64 (n, F, T)


def _irregular_times(rng: np.random.Generator, n: int, steps: int) -> np.ndarray:
    """(n, steps) sorted irregular time stamps on about [0, 20]: half of 2·steps even points, jittered."""
    grid = np.linspace(0.0, STOP_TIME, 2 * steps)
    keep = np.sort(np.argsort(rng.random((n, 2 * steps)), axis=1)[:, :steps], axis=1)
    jitter = rng.normal(0.0, STOP_TIME / (2 * steps), (n, steps))
    return np.sort(grid[keep] + jitter, axis=1)


def _gaussian(rng, n, f, t):
    return rng.standard_normal((n, f, t))


def _autoregressive(rng, n, f, t, phi=0.9, sigma=0.5):
    eps = rng.normal(0.0, sigma, (n, f, t))
    out = np.empty((n, f, t))
    previous = np.zeros((n, f))
    for k in range(t):
        previous = phi * previous + eps[:, :, k]
        out[:, :, k] = previous
    return out


def _car(rng, n, f, t, phi=0.9, sigma=0.01, start=0.01):
    times = _irregular_times(rng, n, t)
    decay = phi ** np.diff(times, axis=1)  # (n, t-1), shared by the features
    eps = rng.standard_normal((n, f, t - 1))
    out = np.empty((n, f, t))
    out[:, :, 0] = start
    for k in range(1, t):
        a = decay[:, k - 1, None]
        out[:, :, k] = a * out[:, :, k - 1] + sigma * np.sqrt(1.0 - a) * eps[:, :, k - 1]
    return out


def _gaussian_process(rng, n, f, t, lengthscale=1.0, variance=1.0, jitter=1e-6):
    times = _irregular_times(rng, n, t)
    r = np.abs(times[:, :, None] - times[:, None, :]) / lengthscale
    kernel = variance * (1.0 + np.sqrt(3.0) * r) * np.exp(-np.sqrt(3.0) * r)  # Matérn ν = 3/2
    chol = np.linalg.cholesky(kernel + jitter * np.eye(t))  # (n, t, t)
    z = rng.standard_normal((n, t, f))
    return np.transpose(chol @ z, (0, 2, 1))


def _harmonic(rng, n, f, t, frequency=2.0):
    times = _irregular_times(rng, n, t)
    return np.broadcast_to(np.sin(2 * np.pi * frequency * times)[:, None, :], (n, f, t)).copy()


def _pseudo_periodic(rng, n, f, t, frequency=2.0, freq_sd=0.01, amplitude=1.0, amp_sd=0.5):
    times = _irregular_times(rng, n, t)[:, None, :]
    freq = rng.normal(frequency, freq_sd, (n, f, t))
    amp = rng.normal(amplitude, amp_sd, (n, f, t))
    return amp * np.sin(2 * np.pi * freq * times)


def _narma(rng, n, f, t, order=10, coefficients=(0.3, 0.05, 1.5, 0.1)):
    a0, a1, a2, a3 = coefficients
    u = rng.uniform(0.0, 0.5, (n, f, order + t))  # inputs of the `order` initial steps, then one per step
    y = np.zeros((n, f, order + t))  # zero initial conditions
    for k in range(order, order + t):
        window = y[:, :, k - order:k].sum(axis=2)  # y_{k-1} … y_{k-order}
        y[:, :, k] = a0 * y[:, :, k - 1] + a1 * y[:, :, k - 1] * window + a2 * u[:, :, k - order] * u[:, :, k - 1] + a3
    return y[:, :, order:]


_GENERATORS = {
    "gaussian": _gaussian, "autoregressive": _autoregressive, "car": _car, "gaussian_process": _gaussian_process,
    "harmonic": _harmonic, "pseudo_periodic": _pseudo_periodic, "narma": _narma,
}  # fmt: skip


def sample_background(process: str, n: int, seed: Seed = 0, n_features: int = N_FEATURES,
                      n_time: int = N_TIME) -> np.ndarray:
    """``n`` fresh background samples (no box) of ``process``, float32 (n, F, T); deterministic per seed."""
    if process not in _GENERATORS:
        raise ValueError(f"unknown process {process!r}; known: {PROCESSES}")
    rng = _rng(seed)
    values = _GENERATORS[process](rng, int(n), n_features, n_time)
    if process != "gaussian":
        values = values + rng.normal(0.0, NOISE_STD, values.shape)
    return values.astype(np.float32)


# ---------------------------------------------------------------------------------------------


@dataclass
class TimeSeriesSet:
    """One generated dataset.

    x: (n, F, T) float32; y: (n,) int64 in {0, 1}; informative_mask: (n, F, T) bool, the box;
    boxes: (n, 4) int64 ``(time_start, time_end, feature_start, feature_end)``, ends exclusive;
    background_sampler: ``sampler(n, seed) -> (n, F, T) float32`` fresh background values of the
    same process (the masking replacement, "the original distribution").
    """

    name: str
    process: str
    x: np.ndarray
    y: np.ndarray
    informative_mask: np.ndarray
    boxes: np.ndarray
    background_sampler: Callable[[int, Seed], np.ndarray] = field(repr=False)
    mu: float = MU

    def __len__(self) -> int:
        return len(self.y)

    def tensors(self, device=None):
        """``(x, y, informative_mask)`` as torch tensors on ``device``."""
        import torch

        return (torch.as_tensor(self.x, device=device), torch.as_tensor(self.y, device=device),
                torch.as_tensor(self.informative_mask, device=device))


def make_dataset(name: str, process: str = "gaussian", n: int = 1000, seed: Seed = 0, mu: float = MU) -> TimeSeriesSet:
    """``n`` samples of dataset ``name`` (see :data:`DATASETS`) over background ``process``.

    Class 1 gets +μ in its box, class 0 −μ (positional sets: +μ for both, the box's position
    differs). Labels are drawn uniformly at random (about balanced). Deterministic per ``seed``.
    """
    key, spec = _spec(name)
    if process not in _GENERATORS:
        raise ValueError(f"unknown process {process!r}; known: {PROCESSES}")
    n, F, T = int(n), N_FEATURES, N_TIME
    label_seq, box_seq, background_seq = np.random.SeedSequence(
        seed if not isinstance(seed, np.random.Generator) else seed.integers(2**63)
    ).spawn(3)
    y = np.random.default_rng(label_seq).integers(0, 2, n).astype(np.int64)
    box_rng = np.random.default_rng(box_seq)

    def starts(fixed: int | None, size: int, length: int) -> np.ndarray:
        if fixed is not None:
            return np.full(n, fixed, dtype=np.int64)
        return box_rng.integers(0, length - size, n).astype(np.int64)

    class_start = np.where(y == 1, spec.class_starts[0], spec.class_starts[1]).astype(np.int64)
    t0 = class_start if spec.positional == "time" else starts(spec.time_start, spec.time_size, T)
    f0 = class_start if spec.positional == "feature" else starts(spec.feature_start, spec.feature_size, F)
    boxes = np.stack([t0, t0 + spec.time_size, f0, f0 + spec.feature_size], axis=1)

    feature, step = np.arange(F)[None, :, None], np.arange(T)[None, None, :]
    mask = ((feature >= f0[:, None, None]) & (feature < (f0 + spec.feature_size)[:, None, None])
            & (step >= t0[:, None, None]) & (step < (t0 + spec.time_size)[:, None, None]))
    sign = np.ones(n) if spec.positional else 2.0 * y - 1.0
    x = sample_background(process, n, background_seq) + (mu * sign)[:, None, None].astype(np.float32) * mask
    return TimeSeriesSet(key, process, x.astype(np.float32), y, mask, boxes,
                         partial(sample_background, process), float(mu))


def make_train_test(name: str, process: str = "gaussian", n_train: int = 1000, n_test: int = 100,
                    seed: int = 0) -> tuple[TimeSeriesSet, TimeSeriesSet]:
    """Independent training and test sets (the repo's defaults: 1000 and 100 samples)."""
    return make_dataset(name, process, n_train, [seed, 0]), make_dataset(name, process, n_test, [seed, 1])


def class_mean_difference(data: TimeSeriesSet) -> tuple[float, float]:
    """(class-1 mean − class-0 mean) over the informative cells, and over the others.

    ≈ 2μ and ≈ 0 for the value datasets; ≈ 0 and ≈ 0 for the positional ones (+μ for both)."""
    one, zero = data.y == 1, data.y == 0
    inside = data.x[one][data.informative_mask[one]].mean() - data.x[zero][data.informative_mask[zero]].mean()
    outside = data.x[one][~data.informative_mask[one]].mean() - data.x[zero][~data.informative_mask[zero]].mean()
    return float(inside), float(outside)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--process", default="gaussian", choices=PROCESSES)
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import time

    for name in args.datasets:
        start = time.perf_counter()
        data = make_dataset(name, args.process, args.n, args.seed)
        took = time.perf_counter() - start
        inside, outside = class_mean_difference(data)
        print(f"{data.name:<20} {args.process:<16} x{data.x.shape} class 1: {data.y.mean():.2f} "
              f"informative cells/sample: {data.informative_mask.sum((1, 2)).mean():.0f} "
              f"class-mean difference inside {inside:+.3f} outside {outside:+.3f} "
              f"std {data.x.std():.2f} ({took * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
