"""Statistics shared by the runner and hypothesis plugins.

Intervals are 95 % unless told otherwise; tests are two-sided.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

ALPHA = 0.05


def wilson_ci(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion; None when n == 0."""
    if n == 0:
        return None
    result = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(result.low), float(result.high)


def mcnemar_exact(before_correct: np.ndarray, after_correct: np.ndarray) -> tuple[float, int, int]:
    """Exact McNemar test on paired correct/incorrect outcomes.

    Returns (p-value, b, c) with b = correct before and wrong after, c = the reverse.
    """
    before_correct = np.asarray(before_correct, bool)
    after_correct = np.asarray(after_correct, bool)
    b = int(np.sum(before_correct & ~after_correct))
    c = int(np.sum(~before_correct & after_correct))
    if b + c == 0:
        return 1.0, b, c
    return float(stats.binomtest(b, b + c, 0.5).pvalue), b, c


def bootstrap_paired_diff_ci(
    before: np.ndarray, after: np.ndarray, *, seed: int, n_boot: int = 2000, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(before) - mean(after), resampling items in pairs."""
    before = np.asarray(before, float)
    after = np.asarray(after, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(before), size=(n_boot, len(before)))
    diffs = before[idx].mean(axis=1) - after[idx].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(diffs, tail)), float(np.percentile(diffs, 100 - tail))


def bootstrap_gap_ci(
    correct: np.ndarray, groups: np.ndarray, best: str, worst: str, *, seed: int, n_boot: int = 2000
) -> tuple[float, float]:
    """Percentile bootstrap CI of accuracy(best) - accuracy(worst), resampling within each group."""
    rng = np.random.default_rng(seed)
    a = np.asarray(correct, float)[groups == best]
    b = np.asarray(correct, float)[groups == worst]
    ia = rng.integers(0, len(a), size=(n_boot, len(a)))
    ib = rng.integers(0, len(b), size=(n_boot, len(b)))
    diffs = a[ia].mean(axis=1) - b[ib].mean(axis=1)
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def chi2_homogeneity(correct: np.ndarray, groups: np.ndarray) -> float:
    """p-value that accuracy is the same in every group (chi-square; Fisher's exact for 2×2 with small counts)."""
    values = sorted(set(groups.tolist()))
    table = np.array([[np.sum(correct[groups == g]), np.sum(~correct[groups == g])] for g in values])
    if len(values) < 2 or table.sum(axis=0).min() == 0:
        return 1.0
    if len(values) == 2 and table.min() < 5:
        return float(stats.fisher_exact(table).pvalue)
    return float(stats.chi2_contingency(table).pvalue)


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (None stays None)."""
    indexed = [(p, i) for i, p in enumerate(p_values) if p is not None]
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(indexed)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
