"""Spectral embedding from the normalized graph Laplacian (von Luxburg 2007; SpRAy, seed 003 VI-B2).

The eigenvectors of the normalized Laplacian L = I - D^-1/2 A D^-1/2 with the smallest
eigenvalues are those of M = D^-1/2 A D^-1/2 with the *largest algebraic* eigenvalues
(``which='LA'``; ``'LM'`` would admit large negative eigenvalues of M).

Above :data:`DENSE_LIMIT` samples, Lanczos (ARPACK ``eigsh``) works on M with its known
eigenvectors deflated. Eigenvalue 1 of M is known exactly: its eigenspace is spanned by
D^1/2 1_C for each connected component C of the graph. Single-vector Lanczos cannot
resolve a repeated eigenvalue (it missed one of three components in a test), and a
component is exactly the small, separated artifact cluster SpRAy looks for; so these
vectors (the trivial one D^1/2 1 first) are computed from the components, and the rest
of the spectrum from M' = M - 2 Q Q^T, which moves them to -1.
"""
from __future__ import annotations

import numpy as np

DENSE_LIMIT = 2_000   # below this, a dense symmetric eigensolver is faster and exact
SPARSE_TOL = 1e-5     # ARPACK relative residual; eigenvalues to ~1e-8, vectors ample for k-means
SPARSE_NCV = 32       # Lanczos basis size (ARPACK's default max(2k+1, 20) restarts more often)


def _unit_eigenspace(affinity, sqrt_degree: np.ndarray, k: int) -> np.ndarray:
    """(N, c ≤ k) orthonormal basis of M's eigenvalue-1 space from the graph's components, D^1/2 1 first."""
    from scipy.sparse.csgraph import connected_components

    graph = affinity
    if graph.nnz and not np.all(graph.data):
        graph = affinity.copy()
        graph.eliminate_zeros()
    _, component = connected_components(graph, directed=False)
    has_edge = graph.getnnz(axis=1) > 0   # an isolated sample's row of M is 0: not in this eigenspace
    real = np.flatnonzero(np.bincount(component[has_edge], minlength=component.max() + 1))
    if len(real) == 0:
        return np.zeros((len(sqrt_degree), 0))
    mass = np.bincount(component, weights=sqrt_degree ** 2)
    real = real[np.argsort(-mass[real], kind="stable")][:k]   # the largest components first
    columns = [np.where(has_edge, sqrt_degree, 0.0)]
    for c in real[:-1]:
        columns.append(np.where(component == c, sqrt_degree, 0.0))
    basis, _ = np.linalg.qr(np.column_stack(columns))
    return basis * np.sign(basis[np.argmax(np.abs(basis[:, 0])), 0])


def _top_eigenpairs(m, known: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest-algebraic k eigenpairs of sparse symmetric m whose eigenvalue-1 vectors include ``known``."""
    from scipy.sparse.linalg import LinearOperator, eigsh
    from threadpoolctl import threadpool_limits

    n, c = known.shape
    if c >= k:
        return np.ones(k), known[:, :k]

    def matvec(x):
        x = np.ravel(x)
        return m @ x - 2.0 * (known @ (known.T @ x))

    deflated = LinearOperator(m.shape, matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    # Lanczos is bound by memory and by its vector updates: extra BLAS threads only
    # contend (4x slower on a loaded 2-core machine, measured), so use one.
    with threadpool_limits(1):
        values, vectors = eigsh(deflated, k=k - c, which="LA", v0=v0, tol=SPARSE_TOL,
                                ncv=min(n - 1, max(SPARSE_NCV, 2 * k + 1)))
    order = np.argsort(values)[::-1]
    return np.concatenate([np.ones(c), values[order]]), np.column_stack([known, vectors[:, order]])


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
        sqrt_degree = np.sqrt(np.maximum(degree, 1e-12))
        values, vectors = _top_eigenpairs(m, _unit_eigenspace(affinity, sqrt_degree, k), k, seed)
    embedding = vectors * inv_sqrt[:, None]
    return (1.0 - values).astype(np.float64), embedding.astype(np.float64)
