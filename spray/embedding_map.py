"""A 2-D UMAP map of the features, reusing the kNN graph already built for the spectral step.

UMAP (McInnes et al. 2018) gets the graph as ``precomputed_knn``, so it never searches
neighbours again. Its numba functions compile on the first call in a process and are
reused by every later call (one class after another, one run after another in the same
worker), so the JIT cost is paid once per process. Above :data:`LARGE_MAP` samples the
layout starts from the spectral coordinates already computed for clustering (when given;
UMAP's own spectral initialisation would solve another eigenproblem on the same graph)
and runs :data:`LARGE_MAP_EPOCHS` epochs instead of UMAP's 200.
"""
from __future__ import annotations

import warnings

import numpy as np

from .graph import KnnGraph

LARGE_MAP = 100_000        # samples above which the map is made cheaper per point
LARGE_MAP_EPOCHS = 60      # SGD epochs above LARGE_MAP (cost is linear in epochs x edges)


def umap_map(features: np.ndarray, graph: KnnGraph, seed: int = 0, *,
             spectral: np.ndarray | None = None, n_epochs: int | None = None) -> np.ndarray:
    """(N, 2) UMAP coordinates of features (N, D) over ``graph``'s neighbours.

    ``spectral``: optional (N, ≥3) spectral embedding of the same graph (trivial column
    first, as :func:`spray.spectral.spectral_embedding` returns it); columns 1-2 become
    the initial layout above :data:`LARGE_MAP` samples. ``n_epochs`` overrides the
    default epochs (200 below 10 000 samples, UMAP's choice up to LARGE_MAP, then
    LARGE_MAP_EPOCHS).
    """
    n = len(features)
    if n < 4:
        return np.zeros((n, 2), dtype=np.float32)
    import umap

    init = "spectral" if n > 15 else "random"
    if n > LARGE_MAP:
        init = spectral[:, 1:3] if spectral is not None and spectral.shape[1] >= 3 else "pca"
    if n_epochs is None:
        n_epochs = 200 if n < 10_000 else (LARGE_MAP_EPOCHS if n > LARGE_MAP else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs/random_state and small-data notices
        reducer = umap.UMAP(
            n_neighbors=graph.n_neighbors, n_components=2, random_state=seed,
            precomputed_knn=(graph.indices, graph.distances), init=init, n_epochs=n_epochs,
        )
        return reducer.fit_transform(features).astype(np.float32)
