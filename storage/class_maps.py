"""Relevance maps regrouped by class, so a per-class task reads only its own rows.

The heatmap store is in sample order; in a shuffled dataset a class's samples sit in every
shard, so reading one class touches every shard of the store, and a thousand classes read
it a thousand times. One pass over the store (one task per contiguous range of samples, a
*part*) writes the part's maps sorted by class:

    RUN/spray_class_maps/part-<p>.npy   (M, H, W) float32 maps of the part's samples, with their
                                        heatmap scale applied and channels summed, sorted by
                                        (class, sample id)
    RUN/spray_class_maps/part-<p>.npz   ``ids`` and ``classes`` of those rows, plus what the
                                        writer adds (written last: it vouches for the .npy)

A class is then one contiguous slice of each part, read through a memory map. Parts are
written atomically, so a killed pass leaves whole parts; a rerun writes only the missing ones.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from .atomic import write_atomic, write_npz_atomic
from .layout import RunLayout


def write_class_maps_part(run: str | Path, part: int, ids: np.ndarray, classes: np.ndarray, maps: np.ndarray,
                          **extra: np.ndarray) -> None:
    """Write one part: ``maps`` (M, H, W) of samples ``ids`` (M,) whose class is ``classes`` (M,)."""
    ids, classes = np.asarray(ids, np.int64), np.asarray(classes, np.int64)
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 3 or len(maps) != len(ids) or len(classes) != len(ids):
        raise ValueError(f"class maps part {part}: maps must be (M, H, W) with M = {len(ids)} ids and classes, "
                         f"got {maps.shape} and {classes.shape}")
    order = np.lexsort((ids, classes))
    maps_path, index_path = RunLayout(run).class_maps_part(part)
    write_atomic(maps_path, lambda fh: np.save(fh, np.ascontiguousarray(maps[order])))
    write_npz_atomic(index_path, ids=ids[order], classes=classes[order], **extra)


def class_maps_parts_done(run: str | Path) -> set[int]:
    """Parts whose index (hence whose maps) is written."""
    directory = RunLayout(run).class_maps
    return {int(p.stem.split("-")[1]) for p in directory.glob("part-*.npz")} if directory.is_dir() else set()


def remove_class_maps(run: str | Path) -> None:
    shutil.rmtree(RunLayout(run).class_maps, ignore_errors=True)


class ClassMaps:
    """Reads one class's maps from every part (indices loaded once, maps memory-mapped)."""

    def __init__(self, run: str | Path):
        self.layout = RunLayout(run)
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def _load(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if self._parts is None:
            parts = []
            for part in sorted(class_maps_parts_done(self.layout.root)):
                maps_path, index_path = self.layout.class_maps_part(part)
                with np.load(index_path) as index:
                    parts.append((index["ids"], index["classes"], np.load(maps_path, mmap_mode="r")))
            self._parts = parts
        return self._parts

    def read(self, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (M,) ascending, maps (M, H, W) float32) of every sample of class ``class_id``."""
        ids, maps = [], []
        for part_ids, part_classes, part_maps in self._load():
            lo, hi = np.searchsorted(part_classes, [class_id, class_id + 1])
            if hi > lo:
                ids.append(part_ids[lo:hi])
                maps.append(np.asarray(part_maps[lo:hi]))
        if not ids:
            raise KeyError(f"class {class_id} has no rows in {self.layout.class_maps}")
        ids, maps = np.concatenate(ids), np.concatenate(maps)
        order = np.argsort(ids, kind="stable")
        return ids[order], maps[order]
