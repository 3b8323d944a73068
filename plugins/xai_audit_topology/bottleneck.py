"""The bottleneck distance between two persistence diagrams of one dimension.

The smallest t such that the points of both diagrams, each also allowed to
go to the diagonal, can be paired with every pair closer than t in the
max-norm. Found by bisection over the candidate costs, each tested by a
maximum bipartite matching (scipy's Hopcroft–Karp).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching


def bottleneck(a: np.ndarray, b: np.ndarray) -> float:
    """Bottleneck distance of the finite points of diagrams ``a`` and ``b`` ((n, 2) birth, death)."""
    a = _finite(a)
    b = _finite(b)
    n, m = len(a), len(b)
    if n == 0 and m == 0:
        return 0.0
    to_diag_a = (a[:, 1] - a[:, 0]) / 2.0
    to_diag_b = (b[:, 1] - b[:, 0]) / 2.0
    if n == 0:
        return float(to_diag_b.max())
    if m == 0:
        return float(to_diag_a.max())
    # rows: a's points, then m diagonal slots; columns: b's points, then n diagonal slots
    size = n + m
    cost = np.zeros((size, size))
    cost[:n, :m] = np.maximum(np.abs(a[:, None, 0] - b[None, :, 0]), np.abs(a[:, None, 1] - b[None, :, 1]))
    cost[:n, m:] = np.inf
    cost[:n, m:][np.arange(n), np.arange(n)] = to_diag_a  # a_i may only go to its own diagonal slot
    cost[n:, :m] = np.inf
    cost[n:, :m][np.arange(m), np.arange(m)] = to_diag_b
    cost[n:, m:] = 0.0  # diagonal to diagonal is free
    # matching everything to the diagonal costs the larger half-persistence: no answer is above that
    bound = max(float(to_diag_a.max()), float(to_diag_b.max()))
    candidates = np.unique(cost[np.isfinite(cost) & (cost <= bound)])
    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _perfect(cost, candidates[mid]):
            hi = mid
        else:
            lo = mid + 1
    return float(candidates[lo])


def _finite(d: np.ndarray) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64).reshape(-1, 2)
    return d[np.isfinite(d[:, 1]) & (d[:, 1] > d[:, 0])]


def _perfect(cost: np.ndarray, t: float) -> bool:
    graph = csr_matrix((cost <= t).astype(np.int8))
    matching = maximum_bipartite_matching(graph, perm_type="column")
    return bool(np.all(matching >= 0))
