"""The run directory: a versioned manifest, heatmaps (Zarr), tables (Parquet), markers.

Every file's name is in :mod:`.layout`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import write_json_atomic
from .heatmaps import open_heatmap_array
from .layout import HEATMAPS, MANIFEST, RunLayout
from .markers import Markers
from .tables import has_table, read_table

SCHEMA_VERSION = 1


class RunMismatchError(ValueError):
    """The run directory belongs to a run with another configuration."""


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("unhans", "torch", "numpy", "scikit-learn", "umap-learn", "dask", "distributed", "zarr", "pyarrow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def init_run(run_dir: Path, config: dict, identity: dict | None = None,
             ignore: tuple[str, ...] = ("cluster", "report")) -> Markers:
    """Create the run directory, or reopen it when its manifest has the same config.

    ``config`` is the plain-data config that decides the results; a directory made with a
    different one raises :class:`RunMismatchError` naming the keys that differ. Top-level
    sections in ``ignore`` (where the work runs: the cluster) may change between reruns.
    """
    run_dir = Path(run_dir)
    manifest_path = run_dir / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise RunMismatchError(
                f"{run_dir}: run store schema version {manifest.get('schema_version')} is not "
                f"{SCHEMA_VERSION}; use a new output directory"
            )
        differ = [key for key in _diff_keys(manifest.get("config"), config) if key.split(".")[0] not in ignore]
        if differ:
            raise RunMismatchError(
                f"{run_dir} holds a run with a different config ({', '.join(differ)} differ); "
                "use another --out directory, or --force to start this one over"
            )
        return Markers(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(manifest_path, {
        "schema_version": SCHEMA_VERSION,
        "config": config,
        "versions": package_versions(),
        **(identity or {}),
    })
    return Markers(run_dir)


def prepare_run_dir(run_dir: Path, *, force: bool = False) -> None:
    """Check that ``run_dir`` can hold a run; with ``force``, delete an earlier run there first.

    Refuses a path that is a file, and refuses to delete a non-empty directory that is not an
    unhans run directory (no manifest): ``--force`` must never wipe a user's folder.
    """
    import shutil

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise FileExistsError(f"--out {run_dir} exists and is not a directory")
    if force and run_dir.exists():
        if not (run_dir / MANIFEST).exists() and any(run_dir.iterdir()):
            raise FileExistsError(f"{run_dir} is not an unhans run directory; refusing to delete it with --force")
        shutil.rmtree(run_dir)


def update_manifest(run_dir: Path, **fields: Any) -> None:
    """Add fields (e.g. dataset and model fingerprints) to the manifest."""
    path = Path(run_dir) / MANIFEST
    manifest = json.loads(path.read_text())
    manifest.update(fields)
    write_json_atomic(path, manifest)


@dataclass
class Run:
    """Lazy, read-only access to a finished or partial run."""

    path: Path
    manifest: dict

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.path)

    def relevance(self):
        """The relevance heatmaps with their scale applied (:class:`.relevance.Relevance`)."""
        from .relevance import Relevance

        return Relevance(self.path)

    @property
    def markers(self) -> Markers:
        return Markers(self.path)

    @property
    def heatmaps(self):
        """The stored heatmaps as a Zarr array (values are relevance / scale)."""
        return open_heatmap_array(self.path)

    def heatmaps_dask(self):
        """The stored heatmaps as a dask array, chunked by shard."""
        import dask.array as da

        array = self.heatmaps
        return da.from_zarr(array, chunks=array.shards)

    def table(self, name: str, columns: list[str] | None = None):
        return read_table(self.path, name, columns)

    def has_table(self, name: str) -> bool:
        return has_table(self.path, name)

    @property
    def has_heatmaps(self) -> bool:
        return (self.path / HEATMAPS).exists()


def open_run(path: str | Path) -> Run:
    """Open a run directory for reading; raises FileNotFoundError with the path if it is none."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{path} is not an unhans run directory (no {MANIFEST})")
    return Run(path=path, manifest=json.loads(manifest_path.read_text()))
