"""From activation vectors to the point cloud persistence is computed on.

Two steps keep Rips persistence affordable: a PCA to at most ``pca_dims``
dimensions (kept only when it preserves most of the variance, so distances
change little), then a subsample of ``landmarks`` points, by farthest-point
sampling (an even net over the cloud, the default) or at random.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Reduction:
    """A fitted PCA: ``project(x) = (x - mean) @ components.T``."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D)
    variance_kept: float  # share of the total variance the k components keep

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    def project(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) @ self.components.T).astype(np.float32)


def fit_reduction(x: np.ndarray, max_dims: int, seed: int = 0) -> Reduction:
    """PCA of ``x`` (N, D) to ``min(max_dims, D, N)`` dimensions.

    For wide clouds a randomized SVD of a few thousand rows finds the
    components in well under a second; the projection then uses every row.
    """
    x = np.asarray(x, dtype=np.float32)
    n, d = x.shape
    mean = x.mean(axis=0)
    k = max(1, min(max_dims, d, n))
    if k == d:  # nothing to reduce: an identity keeps every distance
        return Reduction(mean, np.eye(d, dtype=np.float32), 1.0)
    rng = np.random.default_rng(seed)
    rows = x if n <= 4000 else x[rng.choice(n, 4000, replace=False)]
    centred = rows - mean
    _, s, vt = _svd(centred, k, rng)
    total = float((centred.astype(np.float64) ** 2).sum())
    kept = float((s.astype(np.float64) ** 2).sum() / total) if total > 0 else 1.0
    return Reduction(mean, vt[:k].astype(np.float32), min(1.0, kept))


def _svd(a: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k SVD; randomized (Halko et al.) when k is small against the matrix."""
    if k >= min(a.shape) // 2:
        u, s, vt = np.linalg.svd(a, full_matrices=False)
        return u[:, :k], s[:k], vt[:k]
    p = min(min(a.shape), k + 16)
    q = a @ rng.standard_normal((a.shape[1], p)).astype(a.dtype)
    for _ in range(2):  # power iterations sharpen the spectrum
        q, _ = np.linalg.qr(a @ (a.T @ q))
    q, _ = np.linalg.qr(q)
    u, s, vt = np.linalg.svd(q.T @ a, full_matrices=False)
    return (q @ u)[:, :k], s[:k], vt[:k]


def farthest_point_landmarks(x: np.ndarray, m: int, seed: int = 0) -> np.ndarray:
    """Indices of ``m`` points of ``x`` chosen greedily, each farthest from those before.

    The first point is drawn with ``seed``. Cost: m passes over the cloud.
    """
    n = len(x)
    if m >= n:
        return np.arange(n)
    x = np.asarray(x, dtype=np.float32)
    sq = np.einsum("ij,ij->i", x, x)
    first = int(np.random.default_rng(seed).integers(n))
    chosen = np.empty(m, dtype=np.int64)
    chosen[0] = first
    dist = _sq_dist_to(x, sq, first)
    for j in range(1, m):
        nxt = int(np.argmax(dist))
        chosen[j] = nxt
        np.minimum(dist, _sq_dist_to(x, sq, nxt), out=dist)
    return chosen


def _sq_dist_to(x: np.ndarray, sq: np.ndarray, i: int) -> np.ndarray:
    return np.maximum(sq - 2.0 * (x @ x[i]) + sq[i], 0.0)


def random_landmarks(n: int, m: int, seed: int = 0) -> np.ndarray:
    if m >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))


def landmarks(x: np.ndarray, m: int, method: str, seed: int = 0) -> np.ndarray:
    if method == "farthest":
        return farthest_point_landmarks(x, m, seed)
    if method == "random":
        return random_landmarks(len(x), m, seed)
    raise ValueError(f"unknown landmark method {method!r}; known: farthest, random")
