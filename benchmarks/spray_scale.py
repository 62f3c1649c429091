"""SpRAy at scale: 10^6 pooled heatmaps (32x32 = 1024 dims) through reduction → kNN → spectral
embedding → clustering → UMAP, against a dense CoRelAy-style pipeline at N = 20 000.

Data: synthetic heatmap-like vectors with planted decision strategies (nonnegative,
L2-normalized; smooth bumps on a 32x32 grid with jittered positions, widths and
amplitudes, a weak shared "object" bump, random clutter and skewed pixel noise), one of
them a small, intense corner artifact. Generated in chunks from per-chunk seeds, so the
heatmaps are never all in memory: the PCA reduction streams over them twice.

Scalable path: the library stages, as :func:`spray.analyze_group` runs them (plus the
streaming PCA the caller does when heatmaps come from a store), each timed with its own
peak RSS (VmHWM, reset before each step). JIT compilation of pynndescent and UMAP is one
timed step on a tiny input, paid once per process.

Dense baseline (CoRelAy's SpRAy: ``SciPyPDist`` → ``SparseKNN`` → Laplacian →
``EigenDecomposition`` → k-means), on the first ``--dense-n`` heatmaps: the dense N×N
float64 squared-distance matrix, kNN found by sorting each of its rows, the self-tuning
Gaussian affinity of the kNN kept as a dense N×N matrix, its normalized form's top
eigenpairs by ARPACK on the dense matrix (``--dense-eigh``: LAPACK ``eigh`` on the dense
matrix instead: O(N^3), 23 s at 5 000 here, so ~25 min at 20 000), k-means with the
true number of clusters (CoRelAy leaves k to a person; given here for free). The ratio is
dense time over :func:`spray.analyze_group`'s on the same heatmaps (kNN → spectral →
clusters, no map; at 20 000 x 1024 it takes the PCA + exact-search path).

    python benchmarks/spray_scale.py             # N = 10^6, dense baseline at 20 000
    python benchmarks/spray_scale.py --quick     # N = 50 000, dense baseline at 5 000
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GRID = 32
# name, share of samples, bumps (row, col, sigma_row, sigma_col, amplitude)
STRATEGIES = [
    ("centre", 0.38, [(16, 16, 5.0, 5.0, 1.0)]),
    ("two eyes", 0.24, [(11, 10, 3.0, 3.0, 1.0), (11, 22, 3.0, 3.0, 1.0)]),
    ("left edge", 0.16, [(16, 6, 8.0, 2.5, 1.0)]),
    ("bottom band", 0.12, [(24, 16, 3.0, 7.0, 1.0)]),
    ("top right", 0.07, [(8, 24, 6.0, 6.0, 1.0)]),
    ("corner artifact", 0.03, [(28, 3, 1.5, 1.5, 3.0)]),
]
CHUNK = 20_000


def chunk_labels(n: int, seed: int, index: int) -> np.ndarray:
    """Planted strategy of each of the n samples of chunk ``index``."""
    shares = np.array([s[1] for s in STRATEGIES])
    return np.random.default_rng([seed, index, 0]).choice(len(STRATEGIES), size=n, p=shares / shares.sum())


def chunk_heatmaps(labels: np.ndarray, seed: int, index: int) -> np.ndarray:
    """(n, 1024) float32 nonnegative unit-norm pooled heatmaps of the given strategies."""
    rng = np.random.default_rng([seed, index, 1])
    n = len(labels)
    spec = np.zeros((len(STRATEGIES), 2, 5), np.float32)
    spec[:, :, 2:4] = 1.0  # unused second bump: amplitude 0, unit width
    for s, (_, _, bumps) in enumerate(STRATEGIES):
        spec[s, :len(bumps)] = bumps
    own = spec[labels]
    own[:, :, :2] += rng.normal(0, 1.5, (n, 2, 2))                 # position jitter (pixels)
    own[:, :, 2:4] *= rng.uniform(0.8, 1.25, (n, 2, 1))            # width jitter
    own[:, :, 4] *= rng.uniform(0.6, 1.4, (n, 2))                  # amplitude jitter
    shared = np.zeros((n, 2, 5), np.float32)
    shared[:, 0, :2] = 16 + rng.normal(0, 2, (n, 2))               # weak object relevance
    shared[:, 0, 2:4] = 6.0
    shared[:, 0, 4] = rng.uniform(0, 0.4, n)
    shared[:, 1, :2] = rng.uniform(0, GRID, (n, 2))                # clutter anywhere
    shared[:, 1, 2:4] = rng.uniform(1, 3, (n, 1))
    shared[:, 1, 4] = rng.uniform(0, 0.5, n)
    bumps = np.concatenate([own, shared], axis=1)
    axis = np.arange(GRID, dtype=np.float32)
    gy = np.exp(-0.5 * ((axis - bumps[:, :, 0:1]) / bumps[:, :, 2:3]) ** 2)
    gx = np.exp(-0.5 * ((axis - bumps[:, :, 1:2]) / bumps[:, :, 3:4]) ** 2)
    maps = np.einsum("nb,nby,nbx->nyx", bumps[:, :, 4], gy, gx, optimize=True).reshape(n, -1)
    noise = rng.random(maps.shape, dtype=np.float32)
    maps += (0.45 * maps.mean(axis=1, keepdims=True)) * (noise * noise)  # skewed pixel noise, mean 15%
    maps /= np.linalg.norm(maps, axis=1, keepdims=True)
    return maps


class Source:
    """The N synthetic heatmaps as a re-iterable of chunks (regenerated identically on each pass)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.generate_s = n, seed, 0.0
        self.sizes = [min(CHUNK, n - start) for start in range(0, n, CHUNK)]

    def labels(self) -> np.ndarray:
        return np.concatenate([chunk_labels(size, self.seed, i) for i, size in enumerate(self.sizes)])

    def __call__(self):
        for i, size in enumerate(self.sizes):
            start = time.perf_counter()
            maps = chunk_heatmaps(chunk_labels(size, self.seed, i), self.seed, i)
            self.generate_s += time.perf_counter() - start
            yield maps


def _status_gb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1e6
    return float("nan")


class Steps:
    """Times each step and its peak RSS (VmHWM reset before the step where the kernel allows)."""

    def __init__(self):
        self.rows: list[tuple[str, float, float]] = []

    def run(self, name: str, fn, *args, **kwargs):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.rows.append((name, time.perf_counter() - start, _status_gb("VmHWM:")))
        print(f"  {name:<34} {self.rows[-1][1]:8.1f} s  peak {self.rows[-1][2]:5.2f} GB", flush=True)
        return out

    def total(self, names=None) -> float:
        return sum(t for name, t, _ in self.rows if names is None or name in names)

    def peak(self) -> float:
        return max(p for _, _, p in self.rows)


def warm_up(seed: int) -> None:
    """Compile pynndescent's and UMAP's numba functions once (inputs above EXACT_REDUCED_LIMIT take NN-descent)."""
    from unhans.spray.embedding_map import umap_map
    from unhans.spray.graph import EXACT_REDUCED_LIMIT, knn_graph

    x = np.random.default_rng(seed).random((EXACT_REDUCED_LIMIT + 1000, 4), dtype=np.float32)
    knn_graph(x, 15, seed)
    small = x[:5000]
    umap_map(small, knn_graph(small, 15, seed), seed, n_epochs=2)


def scalable(n: int, seed: int, n_neighbors: int, max_clusters: int, components: int) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from unhans.spray.clustering import cluster_embedding
    from unhans.spray.eigengap import eigengap_candidates
    from unhans.spray.embedding_map import umap_map
    from unhans.spray.graph import affinity_matrix, knn_graph
    from unhans.spray.reduction import pca_reduce
    from unhans.spray.spectral import spectral_embedding

    source = Source(n, seed)
    steps = Steps()
    print(f"scalable path, N = {n}:", flush=True)
    wall = time.perf_counter()
    steps.run("jit warm-up (once per process)", warm_up, seed)
    reduced, reduction = steps.run(f"generate + PCA 1024→{components} (2 passes)", pca_reduce, source, components)
    graph = steps.run(f"kNN graph (NN-descent, k={n_neighbors})", knn_graph, reduced, n_neighbors, seed)
    affinity = steps.run("affinity (self-tuning Gaussian)", affinity_matrix, graph)
    values, vectors = steps.run(f"spectral embedding ({max_clusters + 1} eigenpairs)", spectral_embedding, affinity,
                                max_clusters + 1, seed)
    del affinity
    candidates = eigengap_candidates(values, max_clusters)
    clustering = steps.run("clustering (stability over k, merge)", cluster_embedding, vectors, candidates, reduced,
                           seed=seed, max_k=max_clusters, reduction=reduction)
    xy = steps.run("UMAP (precomputed kNN, spectral init)", umap_map, reduced, graph, seed, spectral=vectors)
    wall = time.perf_counter() - wall
    labels = source.labels()
    ari = adjusted_rand_score(labels, clustering.labels)
    artifact = labels == len(STRATEGIES) - 1
    best = np.bincount(clustering.labels[artifact]).argmax()
    chosen = clustering.labels == best
    print(f"  (of which generating heatmaps: {source.generate_s:.1f} s; PCA keeps "
          f"{reduction.explained_variance_ratio:.3f} of the variance)")
    print(f"  eigenvalues {np.round(values, 5).tolist()}; candidates {candidates}; k chosen {clustering.k_chosen}, "
          f"{clustering.n_clusters} clusters after merging; stability {clustering.stability:.3f}")
    print(f"  ARI {ari:.4f}; artifact cluster purity {(chosen & artifact).sum() / chosen.sum():.4f} "
          f"recall {(chosen & artifact).sum() / artifact.sum():.4f}; map finite {bool(np.isfinite(xy).all())}")
    return {"wall_s": wall, "peak_rss_gb": steps.peak(), "ari": ari, "steps": steps,
            "k": clustering.n_clusters, "generate_s": source.generate_s}


def dense_corelay(features: np.ndarray, n_neighbors: int, n_clusters: int, seed: int, eigh: bool) -> np.ndarray:
    """CoRelAy-style SpRAy on (N, D) features with dense N×N matrices; returns k-means labels."""
    from scipy.sparse.linalg import eigsh
    from sklearn.cluster import KMeans
    from sklearn.metrics.pairwise import euclidean_distances

    n = len(features)
    dist = euclidean_distances(features.astype(np.float64), squared=True)     # (N, N) float64
    np.maximum(dist, 0.0, out=dist)
    # CoRelAy sorts whole rows; done in row blocks so the N×N int64 ranks never coexist with dist
    order = np.concatenate([np.argsort(dist[start:start + 1000], axis=1)[:, :n_neighbors]
                            for start in range(0, n, 1000)])
    knn = np.sqrt(np.take_along_axis(dist, order, axis=1))
    scale = np.maximum(np.median(knn[:, 1:], axis=1), 1e-8)
    dist.fill(0.0)                                                            # reuse as the dense affinity
    dist[np.arange(n)[:, None], order] = np.exp(-knn ** 2 / (scale[:, None] * scale[order]))
    dist[np.arange(n), np.arange(n)] = 0.0
    for start in range(0, n, 1000):                                           # symmetrize by max, in place
        block = slice(start, start + 1000)
        upper = np.maximum(dist[block, start:], dist[start:, block].T)
        dist[block, start:] = upper
        dist[start:, block] = upper.T
    inv_sqrt = 1.0 / np.sqrt(np.maximum(dist.sum(axis=1), 1e-12))
    dist *= inv_sqrt[:, None]
    dist *= inv_sqrt[None, :]                                                 # M = D^-1/2 A D^-1/2, dense
    if eigh:
        from scipy.linalg import eigh as dense_eigh

        values, vectors = dense_eigh(dist, subset_by_index=[n - n_clusters, n - 1], overwrite_a=True,
                                     check_finite=False)
    else:
        values, vectors = eigsh(dist, k=n_clusters, which="LA", tol=1e-6,
                                v0=np.random.default_rng(seed).standard_normal(n))
    vectors = vectors[:, np.argsort(values)[::-1]] * inv_sqrt[:, None]
    return KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit_predict(vectors[:, 1:])


def dense_comparison(n: int, seed: int, n_neighbors: int, max_clusters: int, eigh: bool) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from unhans.spray.analysis import analyze_group

    features = np.concatenate([chunk_heatmaps(chunk_labels(size, seed, i), seed, i)
                               for i, size in enumerate(Source(n, seed).sizes)])
    labels = Source(n, seed).labels()
    steps = Steps()
    print(f"same heatmaps, N = {n}:", flush=True)
    ours = steps.run("unhans analyze_group (kNN→spectral→clusters)", analyze_group, features,
                     n_neighbors=n_neighbors, max_clusters=max_clusters, seed=seed)
    dense = steps.run("dense CoRelAy-style" + (" (LAPACK eigh)" if eigh else " (ARPACK on dense)"),
                      dense_corelay, features, n_neighbors, len(STRATEGIES), seed, eigh)
    (_, ours_s, _), (_, dense_s, dense_peak) = steps.rows
    ours_ari, dense_ari = adjusted_rand_score(labels, ours.clusters), adjusted_rand_score(labels, dense)
    print(f"  ARI unhans {ours_ari:.4f}, dense {dense_ari:.4f}; dense/unhans time {dense_s / ours_s:.1f}x")
    return {"speedup": dense_s / ours_s, "dense_s": dense_s, "ours_s": ours_s, "dense_peak": dense_peak,
            "dense_ari": dense_ari}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="heatmaps on the scalable path (default 10^6)")
    parser.add_argument("--quick", action="store_true", help="N = 50 000 and a dense baseline at 5 000")
    parser.add_argument("--dense-n", type=int, default=None, help="heatmaps in the dense comparison (default 20 000)")
    parser.add_argument("--dense-eigh", action="store_true", help="dense baseline with LAPACK eigh instead of ARPACK")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--neighbors", type=int, default=15)
    parser.add_argument("--max-clusters", type=int, default=8)
    parser.add_argument("--components", type=int, default=48, help="PCA dimensions before the kNN search")
    args = parser.parse_args()
    n = args.n or (50_000 if args.quick else 1_000_000)
    dense_n = args.dense_n or (5_000 if args.quick else 20_000)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} "
          f"on {os.cpu_count()} CPUs", flush=True)
    big = scalable(n, args.seed, args.neighbors, args.max_clusters, args.components)
    print(f"  total wall {big['wall_s']:.1f} s, peak RSS {big['peak_rss_gb']:.2f} GB", flush=True)
    dense = None if args.no_dense else dense_comparison(dense_n, args.seed, args.neighbors, args.max_clusters,
                                                         args.dense_eigh)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print("\n| step | seconds | peak RSS (GB) |\n|---|---:|---:|")
    for name, seconds, peak in big["steps"].rows:
        print(f"| {name} | {seconds:.1f} | {peak:.2f} |")
    print(f"| **total (N = {n})** | **{big['wall_s']:.1f}** | **{big['peak_rss_gb']:.2f}** |")
    if dense is not None:
        print(f"| unhans at {dense_n} (no map) | {dense['ours_s']:.1f} | |")
        print(f"| dense CoRelAy-style at {dense_n} | {dense['dense_s']:.1f} | {dense['dense_peak']:.2f} |")
    speed = f"{dense['speedup']:.1f}" if dense is not None else "nan"
    dense_keys = (f" dense_n={dense_n} dense_s={dense['dense_s']:.1f} dense_ari={dense['dense_ari']:.4f}"
                  if dense is not None else "")
    print(f"RESULT n={n} wall_s={big['wall_s']:.1f} peak_rss_gb={big['peak_rss_gb']:.2f} ari={big['ari']:.4f} "
          f"dense_speedup_{dense_n // 1000}k={speed} clusters={big['k']} load1={os.getloadavg()[0]:.2f}{dense_keys}")


if __name__ == "__main__":
    main()
