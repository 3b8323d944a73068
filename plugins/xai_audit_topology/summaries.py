"""Vectorised summaries of persistence diagrams, as giotto-tda defines them.

Betti curves, persistence landscapes and persistence entropy follow
``gtda.diagrams`` (``BettiCurve``, ``PersistenceLandscape``,
``PersistenceEntropy``) term for term: a feature is alive on [birth, death),
the k-th landscape is the k-th largest tent max(0, min(t - b, d - t)), and the
entropy is the base-2 Shannon entropy of the lifetimes. Only finite features
enter, as in giotto-tda with reduced homology.
"""

from __future__ import annotations

import numpy as np


def _finite(dgm: np.ndarray) -> np.ndarray:
    dgm = np.asarray(dgm, dtype=np.float64).reshape(-1, 2)
    return dgm[np.isfinite(dgm[:, 1])]


def betti_curve(dgm: np.ndarray, sampling: np.ndarray) -> np.ndarray:
    """Number of features alive at each filtration value of ``sampling``."""
    dgm = _finite(dgm)
    t = np.asarray(sampling, dtype=np.float64)[:, None]
    return ((t >= dgm[:, 0]) & (t < dgm[:, 1])).sum(axis=1)


def landscape(dgm: np.ndarray, sampling: np.ndarray, n_layers: int | None = 3) -> np.ndarray:
    """(n_layers, len(sampling)): the k-th largest tent function at each filtration value.

    ``n_layers=None`` gives every level: as many as the diagram has finite features (at least one), so no
    part of the diagram is left out (Bubenik's λ_k for k = 1 … n)."""
    dgm = _finite(dgm)
    t = np.asarray(sampling, dtype=np.float64)[:, None]
    if n_layers is None:
        n_layers = max(1, len(dgm))
    if len(dgm) == 0:
        return np.zeros((n_layers, len(sampling)))
    mid = (dgm[:, 0] + dgm[:, 1]) / 2.0
    half = (dgm[:, 1] - dgm[:, 0]) / 2.0
    tents = np.maximum(half - np.abs(t - mid), 0.0)  # (T, n)
    tents = -np.sort(-tents, axis=1)[:, :n_layers]
    if tents.shape[1] < n_layers:
        tents = np.pad(tents, ((0, 0), (0, n_layers - tents.shape[1])))
    return tents.T


def landscape_breakpoints(dgm: np.ndarray) -> np.ndarray:
    """Every filtration value where some level of the landscape may bend, sorted.

    Each tent rises from b_i and falls to d_i; a rising edge t − b_i meets a falling edge d_j − t at
    (b_i + d_j)/2 (the tent's own peak when i = j), and two rising (or two falling) edges are parallel.
    Between consecutive breakpoints the order of the tents is fixed, so every level is linear there."""
    dgm = _finite(dgm)
    if len(dgm) == 0:
        return np.zeros(0)
    b, d = dgm[:, 0], dgm[:, 1]
    overlap = (b[:, None] < d[None, :]) & (b[None, :] < d[:, None])  # two tents that never overlap never cross
    cross = ((b[:, None] + d[None, :]) / 2.0)[overlap]
    return np.unique(np.concatenate([b, d, cross]))


def landscape_norms(dgm: np.ndarray, p: float = 2.0) -> np.ndarray:
    """The L^p norm of every level of the landscape (one value per finite feature), exactly.

    The levels are piecewise linear with knots among :func:`landscape_breakpoints`; on each linear piece
    from value a to value b over length h, ∫|f|^p is h·(a + b)/2 for p = 1 and h·(a² + ab + b²)/3 for p = 2.
    ``p=inf`` gives each level's height. The norm of the whole landscape is the p-norm of these
    (``np.linalg.norm(levels, p)``)."""
    knots = landscape_breakpoints(dgm)
    if len(knots) == 0:
        return np.zeros(1)
    values = landscape(dgm, knots, None)  # (levels, knots)
    if p == np.inf:
        return values.max(axis=1)
    return piecewise_norms(values, knots, p)


def piecewise_norms(values: np.ndarray, knots: np.ndarray, p: float = 2.0) -> np.ndarray:
    """The L^p norm of each row of ``values`` (levels, knots), each row non-negative and linear between consecutive
    ``knots`` (a landscape sampled at its breakpoints)."""
    if len(knots) < 2:
        return np.zeros(len(values))
    a, b, h = values[:, :-1], values[:, 1:], np.diff(knots)[None, :]
    if p == 1:
        return (h * (a + b) / 2.0).sum(axis=1)
    if p == 2:
        return np.sqrt((h * (a * a + a * b + b * b) / 3.0).sum(axis=1))
    raise ValueError("landscape norms are exact for p = 1, 2 or inf")


def landscape_norm(dgm: np.ndarray, p: float = 2.0) -> float:
    """‖λ‖_p = (Σ_k ‖λ_k‖_p^p)^{1/p} over every level (the maximum for p = inf)."""
    return float(np.linalg.norm(landscape_norms(dgm, p), ord=p))


def entropy(dgm: np.ndarray) -> float:
    """Base-2 entropy of the lifetimes; 0 for an empty diagram."""
    life = np.diff(_finite(dgm), axis=1)[:, 0]
    life = life[life > 0]
    if len(life) == 0:
        return 0.0
    p = life / life.sum()
    return float(-(p * np.log2(p)).sum())


def total_persistence(dgm: np.ndarray) -> float:
    return float(np.diff(_finite(dgm), axis=1).sum())
