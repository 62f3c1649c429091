"""Where the samples come from: arrays (.npy, .npz), image folders, Parquet lists of image files.

The input is described by the config's :class:`~unhans.pipeline.config.InputConfig` (small and
picklable); :func:`open_source` gives a :class:`Source` that reads any range of samples. Workers open the source once and read only
their own ranges: ``.npy`` files by seeking (no memory map, so resident memory stays flat in
the dataset size), image files one by one. A sample that cannot be read (corrupt or missing
file, wrong shape, NaN/Inf) is returned with status ``quarantined`` and a one-line reason;
problems with the source as a whole raise :class:`SourceError` before any work starts.

Sample identity (the contract users join on):

- ``sample_id`` is the position in the input's canonical order: for an ImageFolder exactly
  torchvision's ``ImageFolder`` order (class folders sorted by name, then the files of each class
  sorted by path, searched recursively), for Parquet the row order, for arrays the index;
- ``key`` is stable across reorderings and growth: the path relative to the input root for an
  ImageFolder, the ``key_column`` value or else the path as written for Parquet, the index for arrays.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .config import InputConfig, TransformConfig


#: input kinds (the manifest's ``dataset.kind``) whose sample keys are the row numbers, i.e. the ids
ROW_KEYED_KINDS = ("npy", "npz", "embedded")


class SourceError(ValueError):
    """The input as a whole is unusable (missing, wrong layout, inconsistent)."""


def _absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def absolute_input(cfg: InputConfig) -> InputConfig:
    """``cfg`` with its paths made absolute (relative paths are relative to the working directory)."""
    return replace(cfg, path=_absolute(cfg.path), labels_path=_absolute(cfg.labels_path), root=_absolute(cfg.root))


def open_source(spec: InputConfig, index: str | Path | None = None) -> "Source":
    """The :class:`Source` of ``spec``; image sources read the index written by
    :func:`unhans.pipeline.image_index.build_image_index`."""
    if spec.kind == "npy":
        return NpySource(spec)
    if spec.kind == "npz":
        return NpzSource(spec)
    if spec.kind in ("imagefolder", "parquet"):
        return ImageFileSource(spec, index)
    raise SourceError(f"input.kind: unknown kind {spec.kind!r} (npy, npz, imagefolder, parquet)")


@dataclass
class Batch:
    images: np.ndarray          # (n, *sample_shape) float32; zeros where quarantined
    labels: np.ndarray          # (n,) int64, -1 when unknown
    keys: list[str]             # stable sample keys (see the module docstring)
    sources: list[str]
    status: list[str]           # "ok" or "quarantined"
    errors: list[str]           # "" or a one-line reason
    hashes: list[str]           # content_hash of what was read (file or row bytes): what --reuse compares


class Source:
    """Read access to a dataset by sample range."""

    sample_shape: tuple[int, ...]
    class_names: list[str] | None = None   # from the folder names (ImageFolder), else None
    keys_are_ids: bool = False             # arrays: a sample's key is its row number

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, start: int, stop: int) -> Batch:
        raise NotImplementedError

    def identities(self, start: int, stop: int) -> tuple[list[str], list[str], list[str]]:
        """(keys, sources, content hashes) of samples [start, stop) without decoding where the source allows
        it: what an incremental re-audit compares with the earlier run (the same hashes :meth:`load` gives)."""
        batch = self.load(start, stop)
        return list(batch.keys), list(batch.sources), list(batch.hashes)

    def label_range(self, start: int, stop: int) -> np.ndarray:
        """The given labels of samples [start, stop) (-1 when unknown), without decoding where possible."""
        return np.asarray(self.load(start, stop).labels, np.int64)

    def keeps_ids_of(self, earlier_run: str | Path) -> bool:
        """True when every sample this source shares with the earlier run ``earlier_run`` (the same key) has the same
        id in both: a re-audit then compares each sample with the earlier run's sample of the same id only
        (:mod:`unhans.pipeline.stages.explain_reuse`). False (the safe answer) when that is not known. Sources
        whose keys are their row numbers keep the ids of an earlier run whose input was such an array too."""
        return self.keys_are_ids and _row_keyed(earlier_run)

    def unchanged_ids(self, earlier_run: str | Path, start: int, stop: int) -> np.ndarray | None:
        """For samples [start, stop): the id in ``earlier_run`` of the same sample, taken as unchanged without reading
        it (its key, given label and ``source`` name are that sample's; its content by the source's quick check, for
        image files their size and mtime), else -1; None when the source knows nothing of that kind. A re-audit
        takes such samples' explanations as they are (:mod:`unhans.pipeline.stages.explain_reuse`)."""
        return None


def _row_keyed(earlier_run: str | Path) -> bool:
    """Whether the earlier run's input was an array too, whose keys are its row numbers (the ids)."""
    try:
        manifest = json.loads((Path(earlier_run) / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return (manifest.get("dataset") or {}).get("kind") in ROW_KEYED_KINDS


def _given_labels(labels, start: int, stop: int) -> np.ndarray:
    return (np.asarray(labels[start:stop], np.int64) if labels is not None
            else np.full(stop - start, -1, np.int64))


def content_hash(data: bytes) -> str:
    """A sample's content fingerprint: BLAKE2b, 16 bytes, hex."""
    import hashlib

    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _row_hashes(rows: np.ndarray) -> list[str]:
    """:func:`content_hash` of each stored row of an array (its dtype included)."""
    tag = str(rows.dtype).encode()
    return [content_hash(tag + np.ascontiguousarray(row).tobytes()) for row in rows]


def _check_finite(images: np.ndarray, status: list[str], errors: list[str]) -> None:
    flat = images.reshape(len(images), -1)
    nan = np.isnan(flat).any(1)
    inf = np.isinf(flat).any(1)
    for i in np.flatnonzero(nan | inf):
        if status[i] == "ok":
            status[i] = "quarantined"
            errors[i] = "input contains NaN" if nan[i] else "input contains Inf"
            images[i] = 0


class _NpyReader:
    """Reads rows [start, stop) of a C-ordered .npy file by seeking; no memory map."""

    def __init__(self, path: Path, what: str):
        self.path = path
        try:
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(fh)
                self.offset = fh.tell()
        except FileNotFoundError:
            raise SourceError(f"{what}: file not found: {path}") from None
        except (ValueError, OSError) as exc:
            raise SourceError(f"{what}: {path} is not a readable .npy file ({exc})") from None
        if fortran:
            raise SourceError(f"{what}: {path} is Fortran-ordered; save it C-ordered (np.ascontiguousarray)")
        if dtype.hasobject:
            raise SourceError(f"{what}: {path} holds Python objects; only numeric arrays are read")
        self.shape, self.dtype = tuple(shape), dtype
        self.row_items = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        expected = self.offset + self.row_items * dtype.itemsize * (shape[0] if shape else 0)
        if path.stat().st_size < expected:
            raise SourceError(f"{what}: {path} is truncated ({path.stat().st_size} bytes, header says {expected})")

    def read(self, start: int, stop: int) -> np.ndarray:
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + start * self.row_items * self.dtype.itemsize)
            data = np.fromfile(fh, dtype=self.dtype, count=(stop - start) * self.row_items)
        return data.reshape((stop - start, *self.shape[1:]))


def _labels_array(labels: np.ndarray, n: int, what: str) -> np.ndarray:
    if labels.ndim != 1 or len(labels) != n:
        raise SourceError(f"{what}: labels have shape {labels.shape}, expected ({n},) to match the images")
    if not np.issubdtype(labels.dtype, np.integer):
        raise SourceError(f"{what}: labels must be integers, got {labels.dtype}")
    return labels.astype(np.int64)


def _check_image_array_shape(shape: tuple[int, ...], what: str) -> None:
    if len(shape) not in (3, 4):
        raise SourceError(f"{what}: images must be (N, C, L) or (N, C, H, W), got shape {shape}")
    if shape[0] == 0:
        raise SourceError(f"{what}: no samples")


class NpySource(Source):
    """A .npy file, read a range of rows at a time (by seeking; see _NpyReader)."""

    keys_are_ids = True

    def __init__(self, spec: InputConfig):
        self.images = _NpyReader(Path(spec.path), "input.path")
        _check_image_array_shape(self.images.shape, "input.path")
        if not np.issubdtype(self.images.dtype, np.number):
            raise SourceError(f"input.path: images must be numeric, got {self.images.dtype}")
        self.sample_shape = self.images.shape[1:]
        self.labels = None
        if spec.labels_path:
            reader = _NpyReader(Path(spec.labels_path), "input.labels_path")
            self.labels = _labels_array(reader.read(0, reader.shape[0]), self.images.shape[0], "input.labels_path")
        self.name = Path(spec.path).name

    def __len__(self) -> int:
        return self.images.shape[0]

    def load(self, start: int, stop: int) -> Batch:
        rows = self.images.read(start, stop)
        images = rows.astype(np.float32)
        labels = self.labels[start:stop] if self.labels is not None else np.full(stop - start, -1, np.int64)
        status, errors = ["ok"] * (stop - start), [""] * (stop - start)
        _check_finite(images, status, errors)
        return Batch(images, labels, [str(i) for i in range(start, stop)],
                     [f"{self.name}[{i}]" for i in range(start, stop)], status, errors, _row_hashes(rows))

    def identities(self, start: int, stop: int) -> tuple[list[str], list[str], list[str]]:
        """Keys (the index) and the hash of each row's stored bytes (dtype included)."""
        return ([str(i) for i in range(start, stop)], [f"{self.name}[{i}]" for i in range(start, stop)],
                _row_hashes(self.images.read(start, stop)))

    def label_range(self, start: int, stop: int) -> np.ndarray:
        return _given_labels(self.labels, start, stop)


class NpzSource(Source):
    """An .npz archive, loaded whole once per process (use .npy files for data larger than memory)."""

    keys_are_ids = True

    def __init__(self, spec: InputConfig):
        path = Path(spec.path)
        if not path.is_file():
            raise SourceError(f"input.path: file not found: {path}")
        try:
            archive = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise SourceError(f"input.path: {path} is not a readable .npz archive ({exc})") from None
        with archive:
            if spec.images_key not in archive.files:
                raise SourceError(f"input.images_key: {path} has no array {spec.images_key!r} "
                                  f"(arrays: {', '.join(archive.files)})")
            self.images = archive[spec.images_key]
            self.labels = None
            if spec.labels_key in archive.files:
                self.labels = _labels_array(archive[spec.labels_key], len(self.images), "input.labels_key")
        _check_image_array_shape(self.images.shape, "input.images_key")
        self.sample_shape = self.images.shape[1:]
        self.name = path.name

    def __len__(self) -> int:
        return len(self.images)

    def load(self, start: int, stop: int) -> Batch:
        images = np.array(self.images[start:stop], dtype=np.float32)
        labels = self.labels[start:stop] if self.labels is not None else np.full(stop - start, -1, np.int64)
        status, errors = ["ok"] * (stop - start), [""] * (stop - start)
        _check_finite(images, status, errors)
        return Batch(images, labels, [str(i) for i in range(start, stop)],
                     [f"{self.name}[{i}]" for i in range(start, stop)], status, errors,
                     _row_hashes(self.images[start:stop]))

    def identities(self, start: int, stop: int) -> tuple[list[str], list[str], list[str]]:
        return ([str(i) for i in range(start, stop)], [f"{self.name}[{i}]" for i in range(start, stop)],
                _row_hashes(self.images[start:stop]))

    def label_range(self, start: int, stop: int) -> np.ndarray:
        return _given_labels(self.labels, start, stop)


def decode_image(path, transform: TransformConfig) -> np.ndarray:
    """Decode one image (a path or a binary file object) to a float32 (C, H, W) array in [0, 1] (then normalized)."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        img = img.convert("L" if transform.grayscale else "RGB")
        if transform.size:
            img = img.resize((transform.size, transform.size), Image.BILINEAR)
        if transform.center_crop:
            w, h = img.size
            c = transform.center_crop
            if c > w or c > h:
                raise ValueError(f"image is {w}x{h}, smaller than center_crop {c}")
            left, top = (w - c) // 2, (h - c) // 2
            img = img.crop((left, top, left + c, top + c))
        array = np.asarray(img, dtype=np.float32) / 255.0
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    if transform.mean is not None:
        array = (array - np.asarray(transform.mean, np.float32)[:, None, None]) / np.asarray(
            transform.std, np.float32)[:, None, None]
    return np.ascontiguousarray(array)


def _clean_relative(path: str) -> bool:
    """Whether pathlib would join ``path`` to a root unchanged (relative, no empty, ``.`` or trailing parts)."""
    return bool(path) and not (path.startswith(("/", "./")) or path.endswith(("/", "/.")) or path == "."
                               or "//" in path or "/./" in path)


class ImageFileSource(Source):
    """Images listed in an index (see :mod:`unhans.pipeline.image_index`), decoded one by one."""

    def __init__(self, spec: InputConfig, index: str | Path | None):
        import pyarrow.parquet as pq

        index = Path(index) if index else None
        if index is None or not index.is_file():
            raise SourceError("image sources need an index: call build_image_index first")
        table = pq.read_table(index)
        meta = table.schema.metadata or {}
        self.root = Path(meta.get(b"root", b".").decode())
        if b"classes" in meta:
            self.class_names = json.loads(meta[b"classes"].decode())
        self.paths = table.column("path").to_pylist()
        self.keys = table.column("key").to_pylist()
        self.labels = table.column("label").to_numpy()
        # hashes the index already knows (files unchanged since an earlier run listed them), None elsewhere
        self.known_hashes = (table.column("content_hash").to_pylist() if "content_hash" in table.column_names
                             else [None] * len(self.paths))
        # the earlier run whose ids this index kept (image_index.following_order), if any
        self.ids_from = meta[b"ids_from"].decode() if b"ids_from" in meta else None
        # the earlier run the index was compared with, and its id of each file known unchanged (-1: not known)
        self.earlier = meta[b"earlier"].decode() if b"earlier" in meta else None
        self.earlier_ids = table.column("earlier_id").to_numpy() if "earlier_id" in table.column_names else None
        self.transform = spec.transform
        self.sample_shape = self._probe_shape()

    def _probe_shape(self) -> tuple[int, ...]:
        for rel in self.paths[:64]:
            try:
                return decode_image(self.root / rel, self.transform).shape
            except Exception:  # a corrupt first image must not decide the shape
                continue
        raise SourceError(f"input: none of the first {min(64, len(self.paths))} images under {self.root} decodes")

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, start: int, stop: int) -> Batch:
        n = stop - start
        images = np.zeros((n, *self.sample_shape), np.float32)
        status, errors, hashes = ["ok"] * n, [""] * n, ["missing"] * n
        for j, rel in enumerate(self.paths[start:stop]):
            path = self.root / rel
            try:
                data = path.read_bytes()  # read once: hashed for --reuse, then decoded
                hashes[j] = content_hash(data)
                array = decode_image(io.BytesIO(data), self.transform)
            except FileNotFoundError:
                status[j], errors[j] = "quarantined", f"file not found: {path}"
                continue
            except Exception as exc:  # PIL raises many types for corrupt data
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                status[j], errors[j] = "quarantined", f"cannot decode image: {reason}"
                continue
            if array.shape != self.sample_shape:
                status[j] = "quarantined"
                errors[j] = (f"image decodes to shape {array.shape}, the dataset's is {self.sample_shape}; "
                             "set input.transform.size")
                continue
            images[j] = array
        _check_finite(images, status, errors)
        return Batch(images, self.labels[start:stop].astype(np.int64), self.keys[start:stop],
                     self.file_names(start, stop), status, errors, hashes)

    def file_names(self, start: int, stop: int) -> list[str]:
        """``str(root / path)`` of samples [start, stop) (the ``source`` column), by plain concatenation where that is
        the same string (a clean relative path: ~10x faster than pathlib, which matters when a re-audit only links)."""
        root = str(self.root)
        return [f"{root}/{rel}" if _clean_relative(rel) else str(self.root / rel) for rel in self.paths[start:stop]]

    def identities(self, start: int, stop: int) -> tuple[list[str], list[str], list[str]]:
        """Keys from the index and the hash of each file's bytes: the index's where it knows it (an unchanged file),
        else read (not decoded; "missing" if unreadable)."""
        paths = self.file_names(start, stop)
        hashes = []
        for path, known in zip(paths, self.known_hashes[start:stop]):
            if known is not None:
                hashes.append(known)
                continue
            try:
                with open(path, "rb") as fh:
                    hashes.append(content_hash(fh.read()))
            except OSError:
                hashes.append("missing")
        return list(self.keys[start:stop]), paths, hashes

    def label_range(self, start: int, stop: int) -> np.ndarray:
        return _given_labels(self.labels, start, stop)

    def keeps_ids_of(self, earlier_run: str | Path) -> bool:
        """True when the index was listed keeping ``earlier_run``'s ids (:func:`~unhans.pipeline.image_index.following_order`)."""
        return self.ids_from is not None and self.ids_from == str(Path(earlier_run).resolve())

    def unchanged_ids(self, earlier_run: str | Path, start: int, stop: int) -> np.ndarray | None:
        """The index's ``earlier_id``: files unchanged by their stat, at the same path under the same root, with the
        same label (:mod:`unhans.pipeline.image_index`)."""
        if self.earlier_ids is None or self.earlier != str(Path(earlier_run).resolve()):
            return None
        return self.earlier_ids[start:stop]


class SampleImages:
    """Array-like read access to a source's samples as the model sees them, by id arrays or slices.

    ``images[ids]`` (sorted ids) and ``images[start:stop]`` return float32 (n, *sample_shape);
    quarantined samples read as zeros. Nothing is copied into the run directory: image files are
    decoded again on each read.
    """

    def __init__(self, source: Source):
        self.source = source
        self.shape = (len(source), *source.sample_shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            return self.source.load(start, stop).images[::step]
        if np.isscalar(key):
            return self.source.load(int(key), int(key) + 1).images[0]
        ids = np.asarray(key, dtype=np.int64)
        out = np.zeros((len(ids), *self.shape[1:]), np.float32)
        if not len(ids):
            return out
        # contiguous runs of ids are read as one range
        breaks = np.flatnonzero(np.diff(ids) != 1) + 1
        for run in np.split(np.arange(len(ids)), breaks):
            first, last = int(ids[run[0]]), int(ids[run[-1]])
            if last - first + 1 == len(run):
                out[run] = self.source.load(first, last + 1).images
            else:  # unsorted or repeated ids
                for j in run:
                    out[j] = self.source.load(int(ids[j]), int(ids[j]) + 1).images[0]
        return out
