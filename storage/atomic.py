"""One atomic, durable file writer: a reader sees the old file or the whole new one, never a part.

Every file a completion marker vouches for goes through :func:`write_atomic`: the content is
written to a hidden temporary name in the target's directory, flushed and fsynced, renamed over
the target with ``os.replace`` (atomic on POSIX and Windows), and the directory is fsynced so the
rename survives a power cut. A crash leaves at most a stray ``.<name>.*.tmp`` file.
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Create ``path`` atomically and durably from ``write(binary_file)``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    return write_atomic(path, lambda fh: fh.write(data))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_bytes_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def write_parquet_atomic(path: str | os.PathLike[str], table) -> Path:
    """Write a pyarrow Table as one Parquet file, atomically and durably."""
    import pyarrow.parquet as pq

    return write_atomic(path, lambda fh: pq.write_table(table, fh))


def write_npz_atomic(path: str | os.PathLike[str], *, compressed: bool = False, **arrays) -> Path:
    """Write NumPy arrays as one ``.npz`` file, atomically and durably."""
    import numpy as np

    save = np.savez_compressed if compressed else np.savez
    return write_atomic(path, lambda fh: save(fh, **arrays))
