"""Durable per-epoch storage of a training trajectory inside a run directory.

Layout: ``<run>/dynamics/epoch-00012.npz``, one uncompressed NumPy ``.npz`` per closed epoch
with the arrays of an :class:`~spray.dynamics.trajectory.EpochRecord` (``margin`` float16,
``prob`` float16, ``correct`` uint8, each (N,) indexed by sample id: 5 bytes per sample) and the
0-d int64 scalars ``epoch``, ``num_samples``, ``num_classes``, ``format_version`` (about 1.3 kB of
headers per file in all).

A file is written to a hidden temporary name in the same directory, flushed and fsynced, then
renamed over its final name with ``os.replace`` (atomic on POSIX and Windows), and the directory
is fsynced. A reader therefore sees an epoch entirely or not at all; a crash mid-epoch or
mid-write leaves at most a stray ``.epoch-*.tmp`` file, which readers ignore. Epochs must form a
contiguous run ``0..E-1``; a gap is reported as an error rather than silently skipped.

:class:`EpochWriter` does the same off the training loop: ``fsync`` waits for the disk, which
on a busy machine took ~4 ms per call, a few percent of a short epoch. Its writes run in order
on one process-wide thread; readers in the same process (:func:`stored_epochs` and all built on
it) first wait for the writes in flight to their run directory, and interpreter exit waits too.
"""
from __future__ import annotations

import os
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Final

import numpy as np

from unhans.storage.atomic import write_npz_atomic

from .trajectory import EpochRecord, Trajectory

DYNAMICS_DIR: Final[str] = "dynamics"
FORMAT_VERSION: Final[int] = 1
_EPOCH_FILE = re.compile(r"^epoch-(\d+)\.npz$")


def dynamics_dir(store: str | os.PathLike[str]) -> Path:
    """The directory holding the epoch files of the run directory ``store``."""
    return Path(store) / DYNAMICS_DIR


def epoch_path(store: str | os.PathLike[str], epoch: int) -> Path:
    """Path of the file of ``epoch`` (0-based) in the run directory ``store``."""
    return dynamics_dir(store) / f"epoch-{epoch:05d}.npz"


def write_epoch(store: str | os.PathLike[str], epoch: int, record: EpochRecord, *, num_classes: int) -> Path:
    """Persist one closed epoch atomically and durably; returns the file's path."""
    path = epoch_path(store, epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _write_file(path, epoch, record, num_classes)


def _write_file(path: Path, epoch: int, record: EpochRecord, num_classes: int) -> Path:
    """Write the epoch file atomically and durably (:func:`unhans.storage.atomic.write_npz_atomic`)."""
    return write_npz_atomic(path, margin=record.margin, prob=record.prob, correct=record.correct,
                            epoch=np.int64(epoch), num_samples=np.int64(record.num_samples),
                            num_classes=np.int64(num_classes), format_version=np.int64(FORMAT_VERSION))


_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_in_flight: dict[Path, set[Future]] = {}  # resolved run directory -> its writes not yet finished


def _forget_parent_writer() -> None:
    """In a forked child: the parent's writer thread and its lock holder do not exist here."""
    global _lock, _executor
    _lock, _executor = threading.Lock(), None
    _in_flight.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_writer)


def _submit(store: Path, fn, *args) -> Future:
    """Run ``fn(*args)`` on the process-wide writer thread, registered as in flight for ``store``."""
    global _executor
    key = store.resolve()
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unhans-dynamics-writer")
        future = _executor.submit(fn, *args)
        _in_flight.setdefault(key, set()).add(future)

    def done(f: Future) -> None:
        with _lock:
            _in_flight.get(key, set()).discard(f)

    future.add_done_callback(done)
    return future


def wait_for_writes(store: str | os.PathLike[str]) -> None:
    """Block until the epoch writes this process has in flight to ``store`` have finished (or failed)."""
    with _lock:
        futures = list(_in_flight.get(Path(store).resolve(), ()))
    wait(futures)


class EpochWriter:
    """Persist the closed epochs of one run directory in order, off the calling thread.

    :meth:`submit` creates the directory and returns; the file is written as by
    :func:`write_epoch` on the writer thread, which never creates a directory (a run directory
    deleted meanwhile stays deleted). After a failed write the later epochs of this writer are
    skipped, so the stored trajectory stays contiguous, and the failure is raised by the next
    :meth:`submit` and by :meth:`flush`.
    """

    def __init__(self, store: str | os.PathLike[str]) -> None:
        self.store = Path(store)
        self._futures: list[Future] = []
        self._error: BaseException | None = None

    def submit(self, epoch: int, record: EpochRecord, *, num_classes: int) -> None:
        self._raise_error()
        path = epoch_path(self.store, epoch)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(_submit(self.store, self._write, path, epoch, record, num_classes))

    def flush(self) -> None:
        """Block until every submitted epoch is on disk; raise if one could not be written."""
        wait(self._futures)
        self._futures = []
        self._raise_error()

    def _write(self, path: Path, epoch: int, record: EpochRecord, num_classes: int) -> None:
        if self._error is not None:
            return
        try:
            _write_file(path, epoch, record, num_classes)
        except BaseException as error:  # reported to the training loop by submit / flush
            self._error = error

    def _raise_error(self) -> None:
        if self._error is not None:
            raise OSError(f"persisting training dynamics under {dynamics_dir(self.store)} failed; "
                          f"epochs from the failed one on are not stored: {self._error}") from self._error


def stored_epochs(store: str | os.PathLike[str]) -> list[Path]:
    """Paths of the persisted epochs in order 0..E-1; empty if none. Raises if the epochs have a gap.

    Waits first for the writes this process has in flight to ``store`` (see :class:`EpochWriter`).
    """
    wait_for_writes(store)
    directory = dynamics_dir(store)
    if not directory.is_dir():
        return []
    found: dict[int, Path] = {}
    for path in directory.iterdir():
        match = _EPOCH_FILE.match(path.name)
        if match:
            found[int(match.group(1))] = path
    for expected, epoch in enumerate(sorted(found)):
        if epoch != expected:
            raise ValueError(f"{directory}: epoch {expected} is missing but epoch {epoch} is stored; "
                             "the trajectory must be contiguous from epoch 0")
    return [found[e] for e in sorted(found)]


def read_epoch(path: str | os.PathLike[str]) -> tuple[EpochRecord, int]:
    """Read one epoch file: its record and its ``num_classes``."""
    with np.load(path, allow_pickle=False) as data:
        version = int(data["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(f"{path}: dynamics format version {version}, this reader knows {FORMAT_VERSION}")
        record = EpochRecord(margin=data["margin"], prob=data["prob"], correct=data["correct"])
        if int(data["num_samples"]) != record.num_samples:
            raise ValueError(f"{path}: header says {int(data['num_samples'])} samples, arrays hold {record.num_samples}")
        return record, int(data["num_classes"])


def read_header(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(num_samples, num_classes)`` of an epoch file, without reading its arrays."""
    with np.load(path, allow_pickle=False) as data:
        return int(data["num_samples"]), int(data["num_classes"])


def read_epochs(store: str | os.PathLike[str], *, num_samples: int, num_classes: int) -> list[EpochRecord]:
    """All persisted epochs of ``store``, checked against the expected sizes (empty list if none)."""
    records = []
    for epoch, path in enumerate(stored_epochs(store)):
        record, stored_classes = read_epoch(path)
        if record.num_samples != num_samples or stored_classes != num_classes:
            raise ValueError(f"{path}: stored epoch {epoch} has num_samples={record.num_samples}, "
                             f"num_classes={stored_classes}; expected num_samples={num_samples}, "
                             f"num_classes={num_classes}")
        records.append(record)
    return records


def load_trajectory(store: str | os.PathLike[str]) -> Trajectory:
    """Load the whole persisted trajectory of the run directory ``store``.

    Sizes are taken from the first epoch file and every other file must agree.
    Raises ``FileNotFoundError`` if no epoch has been persisted (sizes cannot be inferred).
    """
    paths = stored_epochs(store)
    if not paths:
        raise FileNotFoundError(f"no persisted training dynamics under {dynamics_dir(store)}")
    num_samples, num_classes = read_header(paths[0])
    records = read_epochs(store, num_samples=num_samples, num_classes=num_classes)
    return Trajectory.from_epochs(records, num_samples=num_samples, num_classes=num_classes)
