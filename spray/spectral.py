"""Spectral embedding from the normalized graph Laplacian (von Luxburg 2007; SpRAy, seed 003 VI-B2).

The eigenvectors of the normalized Laplacian L = I - D^-1/2 A D^-1/2 with the smallest
eigenvalues are those of M = D^-1/2 A D^-1/2 with the *largest algebraic* eigenvalues
(``which='LA'``; ``'LM'`` would admit large negative eigenvalues of M).
"""
from __future__ import annotations

import numpy as np

DENSE_LIMIT = 2_000  # below this, a dense symmetric eigensolver is faster and exact


def spectral_embedding(affinity, n_components: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (laplacian_eigenvalues ascending, embedding (N, n_components)).

    Laplacian eigenvalues are 1 - eigenvalues of M. Rows of the embedding are the
    eigenvectors scaled by D^-1/2 (random-walk embedding), as in Shi & Malik.
    """
    from scipy import sparse

    n = affinity.shape[0]
    degree = np.asarray(affinity.sum(axis=1)).ravel()
    inv_sqrt = 1.0 / np.sqrt(np.maximum(degree, 1e-12))
    m = sparse.diags(inv_sqrt) @ affinity @ sparse.diags(inv_sqrt)
    k = max(1, min(n_components, n - 1))
    if n <= DENSE_LIMIT:
        values, vectors = np.linalg.eigh(m.toarray())
        values, vectors = values[::-1][:k], vectors[:, ::-1][:, :k]
    else:
        from scipy.sparse.linalg import eigsh

        rng = np.random.default_rng(seed)
        values, vectors = eigsh(m, k=k, which="LA", v0=rng.standard_normal(n), tol=1e-6)
        order = np.argsort(values)[::-1]
        values, vectors = values[order], vectors[:, order]
    embedding = vectors * inv_sqrt[:, None]
    return (1.0 - values).astype(np.float64), embedding.astype(np.float64)
