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


def landscape(dgm: np.ndarray, sampling: np.ndarray, n_layers: int = 3) -> np.ndarray:
    """(n_layers, len(sampling)): the k-th largest tent function at each filtration value."""
    dgm = _finite(dgm)
    t = np.asarray(sampling, dtype=np.float64)[:, None]
    if len(dgm) == 0:
        return np.zeros((n_layers, len(sampling)))
    mid = (dgm[:, 0] + dgm[:, 1]) / 2.0
    half = (dgm[:, 1] - dgm[:, 0]) / 2.0
    tents = np.maximum(half - np.abs(t - mid), 0.0)  # (T, n)
    tents = -np.sort(-tents, axis=1)[:, :n_layers]
    if tents.shape[1] < n_layers:
        tents = np.pad(tents, ((0, 0), (0, n_layers - tents.shape[1])))
    return tents.T


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
