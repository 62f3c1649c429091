"""The Dask ``distributed`` cluster: a LocalCluster by default, or an existing scheduler."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from .config import ClusterConfig
from .devices import worker_environment


@contextlib.contextmanager
def dask_client(config: ClusterConfig) -> Iterator["object"]:
    """Yield a ``distributed.Client``.

    With ``config.scheduler`` the client connects to that address (the cluster outlives the
    run); otherwise a LocalCluster of ``workers`` processes with ``threads_per_worker`` threads
    each is started and torn down. Worker processes get OMP/MKL/OpenBLAS capped to their threads.
    """
    from distributed import Client, LocalCluster

    if config.scheduler:
        with Client(config.scheduler, timeout="30s") as client:
            yield client
        return
    cluster = LocalCluster(
        n_workers=config.workers,
        threads_per_worker=config.threads_per_worker,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
        env=worker_environment(config.threads_per_worker),
    )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def ensure_project_importable() -> None:
    """Make ``import storage`` find unhans's package inside a Dask worker.

    A worker puts its local directory first on ``sys.path``, and that directory holds a spill
    folder named ``storage``: with an editable install, Python would import that empty
    folder as a namespace package instead of unhans's ``storage``. Called on the worker
    before any task imports the project's packages.
    """
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.find_spec("storage")
    if spec is not None and spec.origin is not None and spec.origin.endswith("__init__.py"):
        return
    root = str(Path(__file__).resolve().parents[1])
    if sys.path[:1] != [root]:
        sys.path.insert(0, root)
    sys.modules.pop("storage", None)
    importlib.invalidate_caches()
