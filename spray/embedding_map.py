"""A 2-D UMAP map of the features, reusing the kNN graph already built for the spectral step."""
from __future__ import annotations

import warnings

import numpy as np

from .graph import KnnGraph


def umap_map(features: np.ndarray, graph: KnnGraph, seed: int = 0) -> np.ndarray:
    """(N, 2) UMAP coordinates. The numba JIT cost is paid on the first call in a process."""
    n = len(features)
    if n < 4:
        return np.zeros((n, 2), dtype=np.float32)
    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs/random_state and small-data notices
        reducer = umap.UMAP(
            n_neighbors=graph.n_neighbors, n_components=2, random_state=seed,
            precomputed_knn=(graph.indices, graph.distances), init="spectral" if n > 15 else "random",
            n_epochs=200 if n < 10_000 else None,
        )
        return reducer.fit_transform(features).astype(np.float32)
