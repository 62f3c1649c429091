"""Reading relevance back: stored heatmaps times their per-sample scale.

The heatmap array holds ``relevance / max|relevance|`` per sample (see :mod:`.heatmaps`); the
scale lives in the ``samples`` table. Readers here hand out the relevance itself, so no caller
multiplies the scale back on its own.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .heatmaps import open_heatmap_array
from .tables import read_table


class Relevance:
    """Read access to a run's relevance heatmaps by sample id, out of core."""

    def __init__(self, run: str | Path, scale: np.ndarray | None = None):
        """``scale``: every sample's scale in id order, when the caller has it (else read from the samples table)."""
        if scale is None:
            table = read_table(run, "samples", columns=["sample_id", "scale"]).sort_by("sample_id")
            self.sample_id = table.column("sample_id").to_numpy()
            self.scale = table.column("scale").to_numpy().astype(np.float32)
        else:
            self.scale = np.asarray(scale, np.float32)
            self.sample_id = np.arange(len(self.scale))
        self.array = open_heatmap_array(Path(run))
        if len(self.sample_id) != self.array.shape[0] or not np.array_equal(self.sample_id, np.arange(len(self.sample_id))):
            raise ValueError(f"{run}: the samples table ({len(self.sample_id)} rows) does not cover the heatmap "
                             f"array ({self.array.shape[0]} samples) id by id; the explain stage is incomplete")
        self.shard = int(self.array.shards[0]) if self.array.shards else int(self.array.chunks[0])

    def __len__(self) -> int:
        return len(self.sample_id)

    def _scaled(self, stored: np.ndarray, ids: np.ndarray | slice) -> np.ndarray:
        stored = np.asarray(stored, dtype=np.float32)
        return stored * self.scale[ids].reshape((-1,) + (1,) * (stored.ndim - 1))

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Relevance of the sorted sample ids ``ids`` as float32 (n, *sample_shape)."""
        ids = np.asarray(ids, dtype=np.int64)
        return self._scaled(self.array.get_orthogonal_selection((ids,)), ids)

    def one(self, sample_id: int) -> np.ndarray:
        """Relevance of one sample, float32 (*sample_shape)."""
        return self._scaled(self.array[sample_id:sample_id + 1], slice(sample_id, sample_id + 1))[0]

    def shards(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
        """(start, stop, relevance) for every shard of samples [start, stop), in order (``start``
        on a shard boundary: each block is one whole shard, or the end of the range)."""
        end = len(self) if stop is None else min(stop, len(self))
        if start % self.shard:
            raise ValueError(f"start={start} is not on a shard boundary (shards of {self.shard} samples)")
        for first in range(start, end, self.shard):
            last = min(first + self.shard, end)
            yield first, last, self._scaled(self.array[first:last], slice(first, last))
