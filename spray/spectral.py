"""Spectral embedding from the normalized graph Laplacian (von Luxburg 2007; SpRAy, seed 003 VI-B2).

The eigenvectors of the normalized Laplacian L = I - D^-1/2 A D^-1/2 with the smallest
eigenvalues are those of M = D^-1/2 A D^-1/2 with the *largest algebraic* eigenvalues
(``which='LA'``; ``'LM'`` would admit large negative eigenvalues of M).

Above :data:`DENSE_LIMIT` samples, Lanczos (ARPACK ``eigsh``) works on M with its known
top eigenvector u = D^1/2 1 / ||D^1/2 1|| (eigenvalue exactly 1, for any graph) deflated:
M' = M - 2 u u^T moves it to -1, so one fewer eigenpair has to converge. A disconnected
graph keeps eigenvalue 1 in the other components' directions, which M' still finds.
"""
from __future__ import annotations

import numpy as np

DENSE_LIMIT = 2_000   # below this, a dense symmetric eigensolver is faster and exact
SPARSE_TOL = 1e-5     # ARPACK relative residual; eigenvalues to ~1e-8, vectors ample for k-means
SPARSE_NCV = 32       # Lanczos basis size (ARPACK's default max(2k+1, 20) restarts more often)


def _top_eigenpairs(m, u: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest-algebraic k eigenpairs of sparse symmetric m whose top eigenvector is u."""
    from scipy.sparse.linalg import LinearOperator, eigsh
    from threadpoolctl import threadpool_limits

    n = m.shape[0]
    if k == 1:
        return np.ones(1), u[:, None]

    def matvec(x):
        x = np.ravel(x)
        return m @ x - 2.0 * u * (u @ x)

    deflated = LinearOperator(m.shape, matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    # Lanczos is bound by memory and by its vector updates: extra BLAS threads only
    # contend (4x slower on a loaded 2-core machine, measured), so use one.
    with threadpool_limits(1):
        values, vectors = eigsh(deflated, k=k - 1, which="LA", v0=v0, tol=SPARSE_TOL,
                                ncv=min(n - 1, max(SPARSE_NCV, 2 * k + 1)))
    order = np.argsort(values)[::-1]
    return np.concatenate([[1.0], values[order]]), np.column_stack([u, vectors[:, order]])


def spectral_embedding(affinity, n_components: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (laplacian_eigenvalues ascending, embedding (N, n_components)).

    Laplacian eigenvalues are 1 - eigenvalues of M. Rows of the embedding are the
    eigenvectors scaled by D^-1/2 (random-walk embedding), as in Shi & Malik; the first
    column is the trivial (constant) one.
    """
    from scipy import sparse

    n = affinity.shape[0]
    degree = np.asarray(affinity.sum(axis=1), dtype=np.float64).ravel()
    inv_sqrt = 1.0 / np.sqrt(np.maximum(degree, 1e-12))
    m = (sparse.diags(inv_sqrt) @ affinity.astype(np.float64) @ sparse.diags(inv_sqrt)).tocsr()
    k = max(1, min(n_components, n - 1))
    if n <= DENSE_LIMIT:
        values, vectors = np.linalg.eigh(m.toarray())
        values, vectors = values[::-1][:k], vectors[:, ::-1][:, :k]
    else:
        u = np.sqrt(np.maximum(degree, 1e-12))
        values, vectors = _top_eigenpairs(m, u / np.linalg.norm(u), k, seed)
    embedding = vectors * inv_sqrt[:, None]
    return (1.0 - values).astype(np.float64), embedding.astype(np.float64)
