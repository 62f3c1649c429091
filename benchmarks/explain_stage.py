"""The explain stage at scale: throughput against a bare in-process LRP loop, memory flat in N.

Synthetic 3x64x64 images (a .npy file on disk) through a small CNN (pipeline.small_cnn,
3 input channels, 64x64). Every measurement runs in a fresh subprocess so that peak RSS
(ru_maxrss) is its own:

- ``bare``: one process, torch threads = workers x threads_per_worker (the same cores), reads
  the .npy by range, explains the predicted class with LRP epsilon_plus_flat (logits and
  relevance from one forward/backward, ``LRP.explain``), keeps nothing: the upper bound for the
  stage's throughput;
- ``stage``: the real explain stage (`pipeline.explain_command.run_explain`) on a LocalCluster
  of 2 workers x 1 thread, writing Zarr shards, Parquet parts and markers; peak RSS is read in
  the client and in every worker (`client.run`) at the end.

    python benchmarks/explain_stage.py                 # N = 20000 for throughput, 5000 vs 50000 for memory
    python benchmarks/explain_stage.py --quick         # N = 2000 / 1000 vs 4000

Ends with: RESULT throughput_ratio=<stage/bare> rss_ratio=<max over processes of RSS(N_large)/RSS(N_small)> ...
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (3, 64, 64)
WORKERS, THREADS = 2, 1


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_data(path: Path, n: int, seed: int = 0) -> None:
    """Write n random images to a .npy, in chunks (never the whole array in memory)."""
    rng = np.random.default_rng(seed)
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, *SHAPE))
    for start in range(0, n, 2000):
        header[start:start + 2000] = rng.random((min(2000, n - start), *SHAPE), dtype=np.float32)
    header.flush()
    del header


def make_model(path: Path) -> None:
    import torch

    from unhans.pipeline.small_cnn import small_cnn

    torch.manual_seed(0)
    torch.save(small_cnn(in_channels=3, num_classes=10, image_size=64).state_dict(), path)


def child_bare(data: Path, model_path: Path, n: int) -> dict:
    import torch

    from unhans.explainers import LRP
    from unhans.pipeline.devices import limit_threads
    from unhans.pipeline.small_cnn import small_cnn
    from unhans.pipeline.config import InputConfig
    from unhans.pipeline.sources import open_source

    limit_threads(WORKERS * THREADS)
    model = small_cnn(in_channels=3, num_classes=10, image_size=64)
    model.load_state_dict(torch.load(model_path, weights_only=True))
    model.eval()
    lrp = LRP(model, composite="epsilon_plus_flat")
    source = open_source(InputConfig(kind="npy", path=str(data)))
    start = time.perf_counter()
    for s in range(0, n, 128):
        x = torch.from_numpy(source.load(s, min(s + 128, n)).images)
        lrp.explain(x, "predicted")  # logits, predicted class and relevance in one pass, as the stage does
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "throughput": n / seconds, "rss_mb": {"client": _rss_mb()}}


def child_stage(data: Path, model_path: Path, n: int, out: Path) -> dict:
    """The stage as `unhans explain` runs it (same functions), timed and measured on one cluster."""
    from unhans.pipeline.cluster import dask_client
    from unhans.pipeline.config import ExplainRunConfig, from_dict, to_dict
    from unhans.pipeline.explain_command import explain_job
    from unhans.pipeline.stages.explain import check_job, quarantine_summary, run_explain_stage
    from unhans.storage import init_run

    config = from_dict({
        "input": {"kind": "npy", "path": str(data)},
        "model": {"kind": "factory", "factory": "unhans.pipeline.small_cnn:small_cnn", "checkpoint": str(model_path),
                  "kwargs": {"in_channels": 3, "num_classes": 10, "image_size": 64}},
        "explain": {"device": "cpu"},
        "cluster": {"workers": WORKERS, "threads_per_worker": THREADS},
    }, ExplainRunConfig)
    init_run(out, to_dict(config))
    job = explain_job(config, out)
    check_job(job)
    rss = {}
    with dask_client(config.cluster) as client:
        client.run(lambda: None)  # workers up
        start = time.perf_counter()
        run_explain_stage(job, client, num_samples=n, sample_shape=SHAPE, progress=False)
        seconds = time.perf_counter() - start
        for address, value in sorted(client.run(_rss_mb).items()):
            rss[f"worker {len(rss) + 1}"] = value
    rss["client"] = _rss_mb()
    assert quarantine_summary(out)[0] == 0
    return {"seconds": seconds, "throughput": n / seconds, "rss_mb": rss}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None, help="samples for the throughput comparison")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, data, model, n, *rest = args.child
        if kind == "data":
            make_data(Path(data), int(n))
            make_model(Path(model))
            return
        result = child_bare(Path(data), Path(model), int(n)) if kind == "bare" else \
            child_stage(Path(data), Path(model), int(n), Path(rest[0]))
        print(json.dumps(result))
        return

    n = args.n or (2000 if args.quick else 20000)
    small, large = (1000, 4000) if args.quick else (5000, 50000)
    with tempfile.TemporaryDirectory(prefix="unhans-explain-bench-") as tmp:
        tmp = Path(tmp)
        data = tmp / "images.npy"
        t = time.perf_counter()
        # In a child: ru_maxrss survives fork+exec on Linux, so the parent must stay small.
        subprocess.run([sys.executable, __file__, "--child", "data", str(data), str(tmp / "model.pt"),
                        str(max(n, large))], check=True)
        print(f"data: {max(n, large)} x {SHAPE} float32 ({data.stat().st_size / 1e9:.2f} GB) in "
              f"{time.perf_counter() - t:.0f}s")

        bare = run_child("bare", str(data), str(tmp / "model.pt"), str(n))
        stage = run_child("stage", str(data), str(tmp / "model.pt"), str(n), str(tmp / f"run-{n}"))
        ratio = stage["throughput"] / bare["throughput"]
        print(f"\nthroughput at N={n} (samples/s)")
        print(f"  bare in-process LRP loop, {WORKERS * THREADS} threads : {bare['throughput']:8.1f}")
        print(f"  explain stage, {WORKERS} workers x {THREADS} thread    : {stage['throughput']:8.1f}  "
              f"({stage['seconds']:.1f}s; cluster start-up not counted)")
        print(f"  ratio stage / bare                    : {ratio:8.2f}")

        rss = {}
        for size in (small, large):
            rss[size] = run_child("stage", str(data), str(tmp / "model.pt"), str(size), str(tmp / f"run-{size}"))["rss_mb"]
        print(f"\npeak RSS (MB) per process, N={small} vs N={large}")
        ratios = []
        for (name_a, a), (name_b, b) in zip(sorted(rss[small].items()), sorted(rss[large].items())):
            ratios.append(b / a)
            print(f"  {name_a:14s} {a:8.0f} {b:8.0f}   ratio {b / a:.2f}")
        print(f"\nRESULT throughput_ratio={ratio:.3f} rss_ratio={max(ratios):.3f} n={n} "
              f"stage_throughput={stage['throughput']:.1f} bare_throughput={bare['throughput']:.1f} "
              f"n_small={small} n_large={large}")


if __name__ == "__main__":
    main()
