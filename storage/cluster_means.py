"""Mean heatmaps per class and cluster, one small file per class (for the report).

``RUN/spray_cluster_means/<class>.npz`` holds the (H, W) mean relevance of each cluster of that
class (arrays ``"0"``, ``"1"``, ...) and of its Clever-Hans candidate (``"candidate"``). One
file per class keeps every writer (a per-class task) on its own file and lets the report load
only the classes it shows.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from .atomic import write_npz_atomic
from .layout import RunLayout


def write_class_means(run: str | Path, class_id: int, means: dict[str, np.ndarray]) -> Path:
    """Write one class's mean maps (keys: cluster number as text, or ``"candidate"``)."""
    return write_npz_atomic(RunLayout(run).class_means(class_id), compressed=True,
                            **{key: np.asarray(value, np.float32) for key, value in means.items()})


class ClusterMeans(Mapping):
    """Read-only ``{"<class>_<cluster>": (H, W) array}`` over the per-class files, loaded lazily."""

    def __init__(self, run: str | Path):
        self.layout = RunLayout(run)
        self._loaded: dict[int, dict[str, np.ndarray]] = {}

    def _class(self, class_id: int) -> dict[str, np.ndarray]:
        if class_id not in self._loaded:
            path = self.layout.class_means(class_id)
            if path.is_file():
                with np.load(path) as archive:
                    self._loaded[class_id] = {key: archive[key] for key in archive.files}
            else:
                self._loaded[class_id] = {}
        return self._loaded[class_id]

    @staticmethod
    def _split(key: str) -> tuple[int, str]:
        class_id, _, name = str(key).partition("_")
        return int(class_id), name

    def __getitem__(self, key: str) -> np.ndarray:
        class_id, name = self._split(key)
        return self._class(class_id)[name]

    def __contains__(self, key: object) -> bool:
        try:
            class_id, name = self._split(str(key))
        except ValueError:
            return False
        return name in self._class(class_id)

    def __iter__(self) -> Iterator[str]:
        for path in sorted(self.layout.cluster_means.glob("*.npz")):
            class_id = int(path.stem)
            for name in self._class(class_id):
                yield f"{class_id}_{name}"

    def __len__(self) -> int:
        return sum(1 for _ in self)
