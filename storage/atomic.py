"""One atomic, durable file writer: a reader sees the old file or the whole new one, never a part.

Every file a completion marker vouches for goes through :func:`write_atomic`: the content is
written to a hidden temporary name in the target's directory, flushed and fsynced, renamed over
the target with ``os.replace`` (atomic on POSIX and Windows), and the directory is fsynced so the
rename survives a power cut. A crash leaves at most a stray ``.<name>.*.tmp`` file.

:class:`DurableFiles` does the same for several files at once (a unit's table parts, a run of
units' markers): their fsyncs run on background threads while the caller writes the next
file, and each directory is fsynced once; the caller writes what vouches for them (a marker)
only after :meth:`DurableFiles.commit`.
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


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _write_temporary(path: Path, write: Callable[[IO[bytes]], None], sync: bool) -> Path:
    """``write(binary_file)`` into a fresh temporary file beside ``path`` (fsynced when ``sync``; its directory must
    exist); removed on failure."""
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Create ``path`` atomically and durably from ``write(binary_file)``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temporary(path, write, sync=True)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    return write_atomic(path, lambda fh: fh.write(data))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_bytes_atomic(path, _encode_json(obj))


def write_parquet_atomic(path: str | os.PathLike[str], table) -> Path:
    """Write a pyarrow Table as one Parquet file, atomically and durably."""
    import pyarrow.parquet as pq

    return write_atomic(path, lambda fh: pq.write_table(table, fh))


def write_npz_atomic(path: str | os.PathLike[str], *, compressed: bool = False, **arrays) -> Path:
    """Write NumPy arrays as one ``.npz`` file, atomically and durably."""
    import numpy as np

    save = np.savez_compressed if compressed else np.savez
    return write_atomic(path, lambda fh: save(fh, **arrays))


def _encode_json(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=str).encode()


def _sync_and_rename(tmp: Path, path: Path | None) -> None:
    """fsync ``tmp`` and rename it to ``path`` (or only fsync ``tmp`` when ``path`` is None); removes ``tmp`` on failure."""
    try:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if path is not None:
            os.replace(tmp, path)
    except BaseException:
        if path is not None:
            tmp.unlink(missing_ok=True)
        raise


class DurableFiles:
    """Several files written atomically, durable together once :meth:`commit` returns.

    Each file is written to a temporary name in the caller's thread; a background thread
    fsyncs it and renames it into place, so the caller's next file is written meanwhile. A
    reader sees each file old or whole, as with :func:`write_atomic`; after :meth:`commit` the
    files and their names survive a power cut. :meth:`link` adds an existing file under a new
    name (a hard link, which shares the bytes: both names stay valid when either is deleted, and
    every writer here replaces files by renaming, never in place) or a copy where linking fails
    (another file system); :meth:`sync` makes a file another library wrote durable too.
    """

    def __init__(self, threads: int = 4):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="unhans-fsync")
        self._pending: list = []
        self._directories: set[Path] = set()
        self._made: set[Path] = set()  # directories known to exist

    def _parent(self, path: Path) -> None:
        """Make ``path``'s directory (once per directory) and have it fsynced at :meth:`commit`."""
        if path.parent not in self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(path.parent)
        self._directories.add(path.parent)

    def write(self, path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
        path = Path(path)
        self._parent(path)
        tmp = _write_temporary(path, write, sync=False)  # fsynced on a background thread
        self._pending.append(self._pool.submit(_sync_and_rename, tmp, path))
        return path

    def write_parquet(self, path: str | os.PathLike[str], table) -> Path:
        import pyarrow.parquet as pq

        return self.write(path, lambda fh: pq.write_table(table, fh))

    def write_json(self, path: str | os.PathLike[str], obj: Any) -> Path:
        data = _encode_json(obj)
        return self.write(path, lambda fh: fh.write(data))

    def link(self, source: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
        """``path`` becomes ``source``'s content: a hard link, else a copy (replacing whatever ``path`` was)."""
        import shutil

        path = Path(path)
        self._parent(path)
        try:
            os.link(source, path)  # where nothing is yet (a fresh run): the new name appears whole, or not at all
            return path
        except OSError:
            try:
                if os.path.samefile(source, path):  # linked already (a rerun of a unit whose marker was lost)
                    return path
            except OSError:
                pass
        tmp = _temporary(path)
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or links not allowed there
            try:
                shutil.copyfile(source, tmp)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self._pending.append(self._pool.submit(_sync_and_rename, tmp, path))
        else:
            os.replace(tmp, path)
        return path

    def sync(self, path: str | os.PathLike[str]) -> None:
        """Make the existing file ``path`` (written by someone else, e.g. Zarr) durable with the others."""
        path = Path(path)
        self._pending.append(self._pool.submit(_sync_and_rename, path, None))
        self._directories.add(path.parent)

    def commit(self) -> None:
        """Wait until every file is durable under its name; raises the first failure."""
        try:
            for future in self._pending:
                future.result()
            for future in [self._pool.submit(fsync_directory, d) for d in self._directories]:
                future.result()
        finally:
            self._pending.clear()
            self._directories.clear()
            self._pool.shutdown(wait=True)

    def __enter__(self) -> "DurableFiles":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:  # leave no file half-renamed behind the caller's error
            self._pool.shutdown(wait=True)
