"""Each class's SpRAy embeddings and clusterings, one file per class (for viewers such as ViRelAy).

``RUN/spray_embeddings/<class>.npz`` holds ``sample_id`` (N,), ``spectral`` (N, K+1): the spectral
embedding (trivial eigenvector first), ``eigenvalues`` (K+1,), ``umap`` (N, 2) (NaN without the
UMAP map) and ``k<k>`` (N,) the partition at every k the eigengap search tried (``k2``, ``k3``, …).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import write_npz_atomic
from .layout import RunLayout


def write_class_embedding(run: str | Path, class_id: int, sample_ids: np.ndarray, spectral: np.ndarray | None,
                          eigenvalues: np.ndarray, umap: np.ndarray, clusterings: dict[int, np.ndarray]) -> Path:
    n = len(sample_ids)
    arrays = {"sample_id": np.asarray(sample_ids, np.int64),
              "spectral": np.zeros((n, 0), np.float32) if spectral is None else np.asarray(spectral, np.float32),
              "eigenvalues": np.asarray(eigenvalues, np.float64), "umap": np.asarray(umap, np.float32)}
    arrays.update({f"k{int(k)}": np.asarray(labels, np.int64) for k, labels in clusterings.items()})
    return write_npz_atomic(RunLayout(run).class_embedding(class_id), compressed=True, **arrays)


def read_class_embedding(run: str | Path, class_id: int) -> dict[str, np.ndarray] | None:
    """The arrays of one class (see the module docstring), or None when the class has no file."""
    path = RunLayout(run).class_embedding(class_id)
    if not path.is_file():
        return None
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}
