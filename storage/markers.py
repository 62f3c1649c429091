"""Completion markers: a stage, or one unit of a stage, is done iff its marker exists.

Markers are written atomically and last, after the outputs they vouch for, so a run
killed at any point resumes by redoing exactly the units without a marker.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .atomic import DurableFiles, write_json_atomic
from .layout import MARKERS


class Markers:
    """Markers under ``<run>/markers``: ``<stage>.done`` and ``<stage>/<unit>.done``."""

    def __init__(self, root: Path):
        self.root = Path(root) / MARKERS

    def _stage_path(self, stage: str) -> Path:
        return self.root / f"{stage}.done"

    def _unit_path(self, stage: str, unit: int) -> Path:
        return self.root / stage / f"{unit:08d}.done"

    def stage_done(self, stage: str) -> bool:
        return self._stage_path(stage).is_file()

    def stage_info(self, stage: str) -> dict[str, Any] | None:
        path = self._stage_path(stage)
        return json.loads(path.read_text()) if path.is_file() else None

    def mark_stage(self, stage: str, **info: Any) -> None:
        write_json_atomic(self._stage_path(stage), {"stage": stage, "finished": time.time(), **info})

    def clear_stage(self, stage: str) -> None:
        """Forget a stage and its units (for ``--force``)."""
        self._stage_path(stage).unlink(missing_ok=True)
        unit_dir = self.root / stage
        if unit_dir.is_dir():
            for path in unit_dir.glob("*.done"):
                path.unlink()

    def unit_done(self, stage: str, unit: int) -> bool:
        return self._unit_path(stage, unit).is_file()

    def unit_info(self, stage: str, unit: int) -> dict[str, Any] | None:
        path = self._unit_path(stage, unit)
        return json.loads(path.read_text()) if path.is_file() else None

    def mark_unit(self, stage: str, unit: int, **info: Any) -> None:
        write_json_atomic(self._unit_path(stage, unit), {"unit": unit, "finished": time.time(), **info})

    def mark_units(self, stage: str, infos: dict[int, dict[str, Any]]) -> None:
        """Mark several units at once (their markers made durable together, see :class:`DurableFiles`)."""
        finished = time.time()
        with DurableFiles() as files:
            for unit, info in infos.items():
                files.write_json(self._unit_path(stage, unit), {"unit": unit, "finished": finished, **info})

    def done_units(self, stage: str) -> set[int]:
        unit_dir = self.root / stage
        if not unit_dir.is_dir():
            return set()
        return {int(p.stem) for p in unit_dir.glob("*.done")}
