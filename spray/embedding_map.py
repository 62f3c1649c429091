"""A 2-D UMAP map of the features, reusing the kNN graph already built for the spectral step.

UMAP (McInnes et al. 2018) gets the graph as ``precomputed_knn``, so it never searches
neighbours again. Its numba functions compile on the first call in a process and are
reused by every later call (one class after another, one run after another in the same
worker), so the JIT cost is paid once per process. The layout can start from the spectral
coordinates already computed for clustering (UMAP's own spectral initialisation would
solve another eigenproblem on the same graph). Above :data:`LARGE_MAP` samples the
SGD gets a fixed budget of sample-epochs, UMAP's 200 epochs at LARGE_MAP samples,
but at least :data:`MIN_EPOCHS` (30 at 10^6): each epoch costs time linear in N.
"""
from __future__ import annotations

import warnings

import numpy as np

from .graph import KnnGraph

LARGE_MAP = 100_000        # samples above which the map is made cheaper per point
MIN_EPOCHS = 30            # fewest SGD epochs above LARGE_MAP


def default_epochs(n: int) -> int | None:
    """SGD epochs for n samples: 200 below 10 000, UMAP's own choice (200) up to LARGE_MAP, then fewer."""
    if n < 10_000:
        return 200
    if n <= LARGE_MAP:
        return None
    return max(MIN_EPOCHS, round(200 * LARGE_MAP / n))


def umap_map(features: np.ndarray, graph: KnnGraph, seed: int = 0, *,
             spectral: np.ndarray | None = None, n_epochs: int | None = None) -> np.ndarray:
    """(N, 2) UMAP coordinates of features (N, D) over ``graph``'s neighbours.

    ``spectral``: optional (N, ≥3) spectral embedding of the same graph (trivial column
    first, as :func:`spray.spectral.spectral_embedding` returns it); its columns 1-2 are
    the initial layout. Without it, UMAP computes its own spectral layout up to
    :data:`LARGE_MAP` samples and starts from PCA above. ``n_epochs`` overrides
    :func:`default_epochs`.
    """
    n = len(features)
    if n < 4:
        return np.zeros((n, 2), dtype=np.float32)
    import umap

    if spectral is not None and spectral.shape[1] >= 3 and n > 15:
        init = np.asarray(spectral[:, 1:3], dtype=np.float32)
    else:
        init = "pca" if n > LARGE_MAP else ("spectral" if n > 15 else "random")
    if n_epochs is None:
        n_epochs = default_epochs(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs/random_state and small-data notices
        reducer = umap.UMAP(
            n_neighbors=graph.n_neighbors, n_components=2, random_state=seed,
            precomputed_knn=(graph.indices, graph.distances), init=init, n_epochs=n_epochs,
        )
        return reducer.fit_transform(features).astype(np.float32)
