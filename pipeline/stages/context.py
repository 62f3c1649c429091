"""What every audit stage gets: the config, the run's layout and markers, and its inputs resolved.

Stages talk only through the run directory. The two kinds of audit differ only here: the
embedded digits read their arrays from ``RUN/inputs`` and their model from ``RUN/model.pt``
(written by the data and train stages); a user's audit reads the user's ``input:`` and
``model:`` (paths made absolute) and, optionally, the user's recorded trajectory.
"""
from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

from unhans.storage import Markers, RunLayout

from ..config import AuditConfig, InputConfig, ModelConfig
from ..model_loading import absolute_model
from ..sources import absolute_input, open_source

#: the model the train stage builds for the embedded dataset, per ``training.architecture``
EMBEDDED_MODEL_FACTORIES = {"cnn": "unhans.pipeline.small_cnn:small_cnn", "vit": "unhans.pipeline.small_vit:small_vit"}


@dataclass
class AuditContext:
    config: AuditConfig
    layout: RunLayout
    markers: Markers
    quiet: bool = False
    reuse: Path | None = None   # an earlier run whose explanations the explain stage may take (--reuse)
    reuse_rehash: bool = False  # hash every input file again instead of trusting an unchanged stat (--reuse-rehash)
    _cluster: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)
    _client: object = field(default=None, repr=False)
    _starting: "_ClusterStart | None" = field(default=None, repr=False)

    def start_cluster(self, warm: tuple[str, ...] = ()) -> None:
        """Start the audit's Dask cluster in the background, its workers importing the modules ``warm``.

        A stage that works in this process meanwhile (the data stage's checks) hides the
        cluster's start-up; :meth:`client` waits for it. Does nothing once a start is under way.
        """
        if self._client is None and self._starting is None:
            self._starting = _ClusterStart(self.config.cluster, warm)

    def client(self):
        """The Dask client every stage of this audit shares, started on first use (and its dashboard named)."""
        if self._client is None:
            from ..cluster import dashboard_line

            self.start_cluster()
            starting, self._starting = self._starting, None
            self._client = starting.join(self._cluster)
            where = self.config.cluster.scheduler or f"LocalCluster, {self.config.cluster.workers} workers"
            self.log(f"cluster: {where}; {dashboard_line(self._client)}")
        return self._client

    def close(self) -> None:
        """Shut the local cluster down (a cluster given by address stays up)."""
        if self._starting is not None:  # started for a stage that never came (an earlier one failed)
            starting, self._starting = self._starting, None
            with contextlib.suppress(Exception):
                starting.join(self._cluster)
        self._cluster.close()
        self._client = None

    def log(self, message: str) -> None:
        if not self.quiet:
            print(message, flush=True)

    def manifest(self) -> dict:
        return json.loads(self.layout.manifest.read_text())

    def input_spec(self) -> InputConfig:
        """The input every stage reads, with absolute paths."""
        if self.config.embedded:
            return InputConfig(kind="npy", path=str(self.layout.embedded_images.resolve()),
                               labels_path=str(self.layout.embedded_labels.resolve()))
        return absolute_input(self.config.input)

    def model_spec(self) -> ModelConfig:
        """The audited model, with absolute paths (the embedded one as trained by the train stage)."""
        if self.config.embedded:
            model = self.manifest()["model"]
            return ModelConfig(kind="factory", factory=model["factory"], kwargs=model["kwargs"],
                               checkpoint=str(self.layout.model.resolve()))
        return absolute_model(self.config.model)

    def source(self):
        """The opened input (image inputs read the index the data stage wrote)."""
        return open_source(self.input_spec(), self.layout.image_index)

    def trajectory_store(self) -> Path | None:
        """Where the training dynamics are: the run itself (embedded), the user's store, or None."""
        if self.config.embedded:
            return self.layout.root
        path = self.config.dynamics.trajectory
        return Path(path).expanduser().resolve() if path else None

    def class_names(self) -> list[str]:
        return list(self.manifest()["dataset"]["class_names"])

    def keys(self):
        """The ``key`` column in sample-id order (from the samples table)."""
        from unhans.storage import read_table

        return read_table(self.layout.root, "samples", columns=["sample_id", "key"]).sort_by("sample_id").column("key")

    def write_table(self, name: str, table) -> None:
        """Write a per-sample table with ``key`` as its second column (every table joins on sample_id or key)."""
        from unhans.storage import write_table

        if "key" not in table.column_names:
            table = table.add_column(1, "key", self.keys())
        write_table(self.layout.root, name, table)


class _ClusterStart:
    """A cluster coming up on a thread of its own: :func:`unhans.pipeline.cluster.dask_client`, then the
    workers' imports (best effort: a worker that cannot import fails later, in its task, with the reason)."""

    def __init__(self, config, warm: tuple[str, ...]):
        self._stack = contextlib.ExitStack()
        self._client = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, args=(config, tuple(warm)), name="unhans-cluster-start",
                                        daemon=True)
        self._thread.start()

    def _start(self, config, warm: tuple[str, ...]) -> None:
        from ..cluster import dask_client, warm_workers

        try:
            self._client = self._stack.enter_context(dask_client(config))
        except BaseException as exc:  # noqa: BLE001 - handed to the stage that asks for the client
            self._error = exc
            return
        if warm:
            with contextlib.suppress(Exception):
                warm_workers(self._client, warm)
        with contextlib.suppress(Exception):  # this process creates the heatmap array next (importing zarr: ~0.15 s)
            import zarr  # noqa: F401

    def join(self, stack: contextlib.ExitStack):
        """Wait for the start; the cluster's teardown moves onto ``stack``. Raises the start's error, if any."""
        self._thread.join()
        stack.enter_context(self._stack.pop_all())
        if self._error is not None:
            raise self._error
        return self._client
