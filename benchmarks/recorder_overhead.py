"""Cost of the dynamics recorder as a fraction of a training epoch's time, on the CPU (issue #6, item 2).

The audit's training loop (`pipeline.training.train_classifier`: small CNN, digits at 32x32, Adam,
batch 64, one torch thread) runs epoch after epoch on one model; the epochs alternate between four
arms in a rotating order: no recorder, no recorder again (an A/A control: its "overhead" is the
measurement noise), a recorder in memory, and a recorder persisting every epoch to a run directory
(atomic write + fsync on the recorder's writer thread, as in the audit). Per round, each arm's epoch
time is divided by the first arm's epoch time of the same round; the overhead is the median of
these ratios minus one (the ratio of the fastest epochs is printed too). The time spent inside
``update``/``end_epoch`` is also measured directly (a lower-noise estimate that does not depend on
the other processes sharing the machine, but misses indirect costs such as the writer thread).

    python benchmarks/recorder_overhead.py              # 3 warm-up + 40 rounds of 4 epochs (~1-2 min)
    python benchmarks/recorder_overhead.py --rounds 10

Ends with one line: RESULT overhead_pct=<in memory> overhead_store_pct=<persisted> noise_pct=<A/A> ...
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

ARMS = ("none", "none_again", "memory", "store")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is the faster choice on 2 cores)")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from unhans.pipeline.config import TrainingConfig, from_dict
    from unhans.pipeline.devices import limit_threads
    from unhans.pipeline.digits import load_digits_dataset
    from unhans.pipeline.small_cnn import small_cnn
    from unhans.spray.dynamics import DynamicsRecorder

    limit_threads(args.threads)
    data = load_digits_dataset(from_dict({}).dataset).train
    config = TrainingConfig()
    n = len(data.labels)
    x_all, y_all = torch.from_numpy(data.images), torch.from_numpy(data.labels.astype(np.int64))
    torch.manual_seed(0)
    model = small_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(0)
    store = tempfile.TemporaryDirectory(prefix="unhans-overhead-")
    recorders = {"none": None, "none_again": None, "memory": DynamicsRecorder(n, 10),
                 "store": DynamicsRecorder(n, 10, store=store.name)}
    inside = {arm: 0.0 for arm in ARMS}

    def epoch(arm: str) -> float:
        """One epoch of the audit's loop, with the arm's recorder; returns its wall seconds."""
        recorder = recorders[arm]
        start = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=generator)
        for s in range(0, n, config.batch_size):
            idx = order[s:s + config.batch_size]
            x, y = x_all[idx], y_all[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if recorder is not None:
                t = time.perf_counter()
                recorder.update(idx, logits.detach(), y)
                inside[arm] += time.perf_counter() - t
            float(loss.detach())
        if recorder is not None:
            t = time.perf_counter()
            recorder.end_epoch()
            inside[arm] += time.perf_counter() - t
        return time.perf_counter() - start

    for _ in range(args.warmup):
        for arm in ARMS:
            epoch(arm)
    inside = {arm: 0.0 for arm in ARMS}
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for r in range(args.rounds):
        for arm in ARMS[r % len(ARMS):] + ARMS[:r % len(ARMS)]:  # rotate: no arm always runs first
            times[arm].append(epoch(arm))
    recorders["store"].flush()  # the last epoch's file may still be in flight on the writer thread
    store.cleanup()

    base = np.array(times["none"])
    print(f"{args.rounds} rounds, {n} samples, batch {config.batch_size}, {args.threads} torch thread(s)")
    print(f"{'arm':10s} {'median epoch s':>14s} {'median ratio':>12s} {'min ratio':>9s} "
          f"{'inside recorder s/epoch':>24s} {'direct %':>8s}")
    result = {}
    for arm in ARMS:
        ratio = statistics.median(np.array(times[arm]) / base)
        fastest = min(times[arm]) / base.min()
        per_epoch = inside[arm] / args.rounds
        direct = 100 * per_epoch / float(np.median(base))
        print(f"{arm:10s} {np.median(times[arm]):14.4f} {ratio:12.4f} {fastest:9.4f} {per_epoch:24.5f} {direct:8.2f}")
        result[arm] = (100 * (ratio - 1), direct)
    print(f"RESULT overhead_pct={result['memory'][0]:.2f} overhead_store_pct={result['store'][0]:.2f} "
          f"noise_pct={result['none_again'][0]:.2f} direct_pct={result['memory'][1]:.2f} "
          f"direct_store_pct={result['store'][1]:.2f} epoch_seconds={float(np.median(base)):.3f}")


if __name__ == "__main__":
    main()
