"""Per-sample tables in Parquet: a table is a folder of part files, one per unit of work.

Part files are written atomically under their unit's number, so a retried unit
replaces its own part and never duplicates rows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import write_parquet_atomic

from .layout import TABLES


def table_dir(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / TABLES / name


def part_path(run_dir: Path, name: str, unit: int) -> Path:
    """The part file of one unit's rows of table ``name``."""
    return table_dir(run_dir, name) / f"part-{unit:08d}.parquet"


def write_part(run_dir: Path, name: str, unit: int, table) -> Path:
    """Write one unit's rows of table ``name``."""
    path = part_path(run_dir, name, unit)
    write_parquet_atomic(path, table)
    return path


def read_part(path: Path, columns: list[str] | None = None):
    """One part file as a pyarrow Table (``ParquetFile.read``: a third of ``pq.read_table``'s fixed cost)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as part:
        return part.read(columns=columns)


def write_table(run_dir: Path, name: str, table) -> Path:
    """Write a whole table (a single part)."""
    directory = table_dir(run_dir, name)
    if directory.is_dir():
        for old in directory.glob("part-*.parquet"):
            old.unlink()
    return write_part(run_dir, name, 0, table)


def _parts(run_dir: Path, name: str) -> list[Path]:
    """The part files of table ``name`` in unit order; FileNotFoundError when it has none."""
    directory = table_dir(run_dir, name)
    parts = sorted(directory.glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"table {name!r} has no parts in {directory}")
    return parts


def read_table(run_dir: Path, name: str, columns: list[str] | None = None):
    """All parts of table ``name`` as one pyarrow Table (parts in unit order)."""
    import pyarrow as pa

    return pa.concat_tables([read_part(p, columns) for p in _parts(run_dir, name)])


def iter_table_batches(run_dir: Path, name: str, columns: list[str], rows: int = 8192):
    """Record batches of table ``name`` (parts in unit order, at most ``rows`` rows each): for
    columns too large to hold for every sample at once (the ``outputs`` table's logits)."""
    import pyarrow.parquet as pq

    for part in _parts(run_dir, name):
        yield from pq.ParquetFile(part).iter_batches(batch_size=rows, columns=columns)


def table_columns(run_dir: Path, name: str) -> list[str]:
    """Column names of table ``name`` (from its first part's schema; every part has the same)."""
    import pyarrow.parquet as pq

    return list(pq.read_schema(_parts(run_dir, name)[0]).names)


def has_table(run_dir: Path, name: str) -> bool:
    return any(table_dir(run_dir, name).glob("part-*.parquet"))


def matrix_column(column) -> np.ndarray:
    """A fixed-size-list column (logits, features, latent profiles) as an (N, D) float32 array."""
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return np.asarray(array.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(len(array), -1)
