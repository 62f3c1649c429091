"""Device and thread choices, made deliberately.

On a 2-core machine a small CNN trained 40x slower with oversubscribed threads (every
process using every core) than with one thread per process. Each process that computes
calls :func:`limit_threads` with its share of the cores.
"""
from __future__ import annotations

import os


def resolve_device(name: str = "auto") -> str:
    """'auto' → 'cuda' when a GPU is visible, else 'cpu'; anything else is passed through."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but no CUDA device is available")
    return name


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_POOLS_SET = False  # whether limit_threads ever changed the native pools of this process


def limit_threads(threads: int) -> None:
    """Cap torch intra-op threads and BLAS/OpenMP pools of this process to ``threads``."""
    import torch

    global _POOLS_SET
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    if not _POOLS_SET and all(os.environ.get(name) == str(threads) for name in worker_environment(threads)):
        return  # a worker started with these (pipeline.cluster): every pool read them when it loaded (~12 ms saved)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
        _POOLS_SET = True
    except ImportError:  # threadpoolctl ships with scikit-learn; without it only torch is capped
        pass


def worker_environment(threads: int) -> dict[str, str]:
    """Environment variables that cap native thread pools in a freshly started worker process."""
    value = str(max(1, int(threads)))
    return {name: value for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}
