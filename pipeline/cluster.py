"""The Dask ``distributed`` cluster: a LocalCluster by default, or an existing scheduler."""
from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator

from .config import ClusterConfig
from .devices import worker_environment


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextlib.contextmanager
def dask_client(config: ClusterConfig, *, use_gpus: bool = True) -> Iterator["object"]:
    """Yield a ``distributed.Client``.

    With ``config.scheduler`` the client connects to that address (the cluster outlives the
    run). Otherwise, on a machine with GPUs and dask-cuda installed (``pip install unhans[gpu]``)
    a LocalCUDACluster with one worker per GPU is started; else a LocalCluster of ``workers``
    processes with ``threads_per_worker`` threads each, OMP/MKL/OpenBLAS capped to those
    threads. The local cluster is torn down on exit.
    """
    from distributed import Client

    if config.scheduler:
        try:
            client = Client(config.scheduler, timeout="30s")
        except OSError as exc:
            raise ConnectionError(f"cluster.scheduler: cannot reach the Dask scheduler at {config.scheduler} "
                                  f"({exc})") from None
        try:
            yield client
        finally:
            client.close()
        return
    gpus = _gpu_count() if use_gpus else 0
    with _without_malloc_trim():
        cluster = _local_cluster(config, gpus)
    try:
        client = Client(cluster)  # not ``with``: that binds the client to this thread's context (see AuditContext)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


@contextlib.contextmanager
def _without_malloc_trim() -> Iterator[None]:
    """Start workers without Dask's default ``MALLOC_TRIM_THRESHOLD_=65536``.

    Setting that variable turns off glibc's dynamic mmap threshold, so every activation-sized
    tensor torch allocates is a fresh ``mmap`` whose pages are faulted in and zeroed, and is
    unmapped again when freed. Measured here: a small CNN explained 580 samples/s in a plain
    process and 326 with the variable set (``benchmarks/explain_stage.py`` shows the effect on
    the stage). A Nanny writes the variable into its own process's environment before spawning
    (any earlier default cluster in this process leaves it there), so it is removed from
    ``os.environ`` too; glibc read it, if at all, when this process started.
    """
    import os

    import dask

    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        yield


def _import_modules(modules: list[str]) -> float:
    """Import ``modules`` in this process (a worker); returns the seconds it took. A module that fails to
    import is passed over: the task that needs it reports the error."""
    import importlib
    import time

    start = time.perf_counter()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - warming up only
            pass
    return time.perf_counter() - start


def warm_workers(client, modules: Iterable[str]) -> dict[str, float]:
    """Have every worker import ``modules`` now (seconds per worker address).

    A fresh worker process pays for its imports in its first task: torch alone takes over a
    second, and a stage's timer would count that as the stage's own work. Warmed while the
    cluster comes up, the workers start the stage ready. Workers that join later import on
    first use as before.
    """
    return client.run(_import_modules, list(modules))


def dashboard_line(client) -> str:
    """Where to watch the run: the dashboard address, or how to get one."""
    link = None
    try:
        link = client.dashboard_link if client.scheduler_info().get("services", {}).get("dashboard") else None
    except Exception:  # noqa: BLE001 - a scheduler that cannot say must not stop the run
        link = None
    if link:
        return f"dashboard {link}"
    return "no dashboard (pip install 'unhans[dashboard]' to watch the run in a browser)"


def _dashboard_address() -> str | None:
    """A free port for the local dashboard when bokeh (which draws it) is installed, else none."""
    import importlib.util

    return ":0" if importlib.util.find_spec("bokeh") is not None else None


def _local_cluster(config: ClusterConfig, gpus: int):
    from distributed import LocalCluster

    cluster = None
    if gpus:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            print(f"unhans: {gpus} GPU(s) visible but dask-cuda is not installed: {config.workers} workers will "
                  "share cuda:0. Install unhans[gpu] for one worker per GPU.", file=sys.stderr)
        else:
            cluster = LocalCUDACluster(threads_per_worker=config.threads_per_worker, dashboard_address=_dashboard_address(),
                                       silence_logs=logging.ERROR)
    if cluster is None:
        cluster = LocalCluster(
            n_workers=config.workers,
            threads_per_worker=config.threads_per_worker,
            processes=True,
            dashboard_address=_dashboard_address(),
            silence_logs=logging.ERROR,
            env=worker_environment(config.threads_per_worker),
        )
    return cluster
