"""Choosing the number of clusters from the Laplacian spectrum (eigengap heuristic)."""
from __future__ import annotations

import numpy as np


def eigengap_candidates(laplacian_eigenvalues: np.ndarray, max_clusters: int, top: int = 3,
                        floor: float = 1e-3) -> list[int]:
    """Cluster counts k in [2, max_clusters] ordered by relative eigengap, largest first.

    The relative gap (λ_{k+1} - λ_k) / max(λ_{k+1}, floor) is used instead of the absolute
    one: k well separated groups give k eigenvalues near 0 followed by a small λ_{k+1}, a
    gap that the absolute criterion ranks below the wider spacing of the noisy upper
    spectrum. ``laplacian_eigenvalues`` ascending (λ_1 ≈ 0). Several candidates are
    returned because one gap is unreliable on small, noisy classes; the clustering step
    chooses among them by stability.
    """
    values = np.asarray(laplacian_eigenvalues)
    upper = min(max_clusters, len(values) - 1)
    if upper < 2:
        return [min(2, max(1, len(values)))]
    # gaps[i] belongs to k = i + 2: (λ_{k+1} - λ_k) / λ_{k+1}, eigenvalues 1-indexed
    gaps = (values[2:upper + 1] - values[1:upper]) / np.maximum(values[2:upper + 1], floor)
    order = np.argsort(gaps, kind="stable")[::-1]
    return [int(i + 2) for i in order[:top]]


def eigengap(laplacian_eigenvalues: np.ndarray, k: int) -> float:
    """Size of the gap after the k-th eigenvalue."""
    values = np.asarray(laplacian_eigenvalues)
    return float(values[k] - values[k - 1]) if k < len(values) else 0.0
