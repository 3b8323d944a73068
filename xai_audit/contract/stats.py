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


# --------------------------------------------------------------------------- proportions


def two_proportion_test(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value that two independent proportions k1/n1 and k2/n2 are equal.

    Fisher's exact test when any expected count is below 5, else the pooled z-test.
    """
    if n1 == 0 or n2 == 0:
        return 1.0
    table = np.array([[k1, n1 - k1], [k2, n2 - k2]])
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    if expected.min() < 5:
        return float(stats.fisher_exact(table).pvalue)
    pooled = (k1 + k2) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (k1 / n1 - k2 / n2) / se
    return float(2 * stats.norm.sf(abs(z)))


#: how :func:`equivalence_test` computes: named in every result, so a reader knows it is an approximation
EQUIVALENCE_METHOD = (
    "two one-sided tests (TOST) of the accuracy difference against ±margin, each at the 5 % level: normal "
    "approximation with the Agresti-Caffo adjustment (one success and one failure added to each side); power: "
    "the chance the same test declares equivalence at these sample sizes when the true difference is zero"
)


def equivalence_test(k1: int, n1: int, k2: int, n2: int, margin: float,
                     alpha: float = ALPHA) -> dict[str, float | bool]:
    """Two one-sided tests (TOST) that the proportions k1/n1 and k2/n2 differ by less than ``margin``.

    Equivalence is declared when both one-sided nulls (difference <= -margin, difference >= +margin) are
    rejected at ``alpha``: the TOST p-value (the larger of the two) is below ``alpha``, equivalently the
    ``1 - 2 alpha`` interval of the difference lies inside ±margin. The difference and its standard error use
    the Agresti-Caffo adjustment (k + 1) / (n + 2), which keeps a group at 100 % from getting an interval of
    zero width. ``power`` is the chance of declaring equivalence at these n when the true difference is zero
    (the pooled adjusted proportion on both sides): below 0.8, a failure to show equivalence says little.

    Returns ``{difference, ci, p_value, power, equivalent, margin}``; ``difference`` is the plain k1/n1 - k2/n2.
    """
    if n1 <= 0 or n2 <= 0:
        raise ValueError("both groups need at least one sample")
    if not 0 < margin < 1:
        raise ValueError("margin must be between 0 and 1")
    p1, p2 = (k1 + 1) / (n1 + 2), (k2 + 1) / (n2 + 2)
    diff = p1 - p2
    se = float(np.sqrt(p1 * (1 - p1) / (n1 + 2) + p2 * (1 - p2) / (n2 + 2)))
    p_lower = float(stats.norm.sf((diff + margin) / se))  # H0: diff <= -margin
    p_upper = float(stats.norm.cdf((diff - margin) / se))  # H0: diff >= +margin
    z = float(stats.norm.ppf(1 - alpha))
    pooled = (k1 + k2 + 2) / (n1 + n2 + 4)
    se0 = float(np.sqrt(pooled * (1 - pooled) * (1 / (n1 + 2) + 1 / (n2 + 2))))
    power = max(0.0, 2 * float(stats.norm.cdf(margin / se0 - z)) - 1)
    p_value = max(p_lower, p_upper)
    return {
        "difference": k1 / n1 - k2 / n2,
        "ci": [diff - z * se, diff + z * se],
        "p_value": p_value,
        "power": power,
        "equivalent": p_value < alpha,
        "margin": margin,
    }


def samples_for_ci_width(p: float, width: float, confidence: float = 0.95) -> int:
    """How many samples give a proportion near ``p`` a two-sided interval no wider than ``width``.

    Normal approximation, with ``p`` clipped to [0.05, 0.95] so a group that
    happens to score 100 % is not promised an interval of zero width.
    """
    if width <= 0:
        raise ValueError("width must be positive")
    p = min(max(float(p), 0.05), 0.95)
    z = stats.norm.ppf(1 - (1 - confidence) / 2)
    return int(np.ceil((2 * z) ** 2 * p * (1 - p) / width**2))


# --------------------------------------------------------------------------- groups


def group_accuracies(correct: np.ndarray, groups: np.ndarray, values: list[str]) -> np.ndarray:
    """Accuracy of each group in ``values`` (NaN for an empty group)."""
    correct = np.asarray(correct, float)
    out = np.full(len(values), np.nan)
    for j, value in enumerate(values):
        mask = groups == value
        if mask.any():
            out[j] = correct[mask].mean()
    return out


def permutation_gap_test(
    correct: np.ndarray, groups: np.ndarray, *, seed: int, n_perm: int = 2000
) -> tuple[float, float]:
    """Permutation test of the accuracy gap between the best and the worst group.

    The statistic is max(group accuracy) - min(group accuracy); the null
    shuffles group membership, so choosing the best and worst groups after
    seeing the data is part of the null distribution. Returns (gap, p-value);
    the p-value counts the observed arrangement, so it is never 0.
    """
    correct = np.asarray(correct, float)
    values, codes = np.unique(np.asarray(groups), return_inverse=True)
    if len(values) < 2:
        return 0.0, 1.0
    sizes = np.bincount(codes, minlength=len(values)).astype(float)

    def gaps(code_matrix: np.ndarray) -> np.ndarray:
        # code_matrix: (P, N) group codes -> (P,) gap
        p = code_matrix.shape[0]
        flat = code_matrix + np.arange(p)[:, None] * len(values)
        sums = np.bincount(flat.ravel(), weights=np.tile(correct, p), minlength=p * len(values))
        acc = sums.reshape(p, len(values)) / sizes
        return acc.max(axis=1) - acc.min(axis=1)

    observed = float(gaps(codes[None, :])[0])
    rng = np.random.default_rng(seed)
    exceed = 0
    for start in range(0, n_perm, 500):
        m = min(500, n_perm - start)
        shuffled = rng.permuted(np.broadcast_to(codes, (m, len(codes))), axis=1)
        exceed += int(np.sum(gaps(shuffled) >= observed - 1e-12))
    return observed, (exceed + 1) / (n_perm + 1)


# --------------------------------------------------------------------------- prediction shift


def prediction_shift_matrix(pred_before: np.ndarray, pred_after: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (C, C): row = class predicted on the clean image, column = after the intervention."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(pred_before, int), np.asarray(pred_after, int)), 1)
    return matrix


def class_gain_test(
    pred_before: np.ndarray, pred_after: np.ndarray, n_classes: int, *, seed: int, n_boot: int = 2000
) -> dict:
    """Does one class gain predictions under an intervention? The test that tells a shortcut from fragility.

    For each class k, the paired indicator "predicted k" before and after is
    compared with an exact McNemar test (``c`` images move into k, ``b`` move
    out). The class with the largest gain is reported with its p-value
    multiplied by the number of classes (Bonferroni: the class was chosen
    after looking) and a simultaneous interval at 1 - 0.05 / C by paired
    bootstrap. ``concentration`` is the share of changed predictions that
    went into that class, with its Wilson interval: a shortcut drains most
    changed predictions into one class, plain fragility spreads them.
    """
    pred_before = np.asarray(pred_before, int)
    pred_after = np.asarray(pred_after, int)
    n = len(pred_before)
    gains = np.array([np.mean(pred_after == k) - np.mean(pred_before == k) for k in range(n_classes)]) if n else np.zeros(n_classes)
    k = int(np.argmax(gains))
    p_raw, moved_out, moved_in = mcnemar_exact(pred_before == k, pred_after == k)
    # mcnemar_exact counts "true before, false after" as b: here that is moving out of k
    changed = int(np.sum(pred_before != pred_after))
    confidence = 1 - ALPHA / n_classes
    ci = (
        bootstrap_paired_diff_ci(pred_after == k, pred_before == k, seed=seed, n_boot=n_boot, confidence=confidence)
        if n
        else (0.0, 0.0)
    )
    conc_ci = wilson_ci(moved_in, changed)
    return {
        "class_index": k,
        "gain": float(gains[k]),
        "gains": gains.tolist(),
        "share_before": float(np.mean(pred_before == k)) if n else 0.0,
        "share_after": float(np.mean(pred_after == k)) if n else 0.0,
        "p_value": min(1.0, p_raw * n_classes),
        "p_value_unadjusted": p_raw,
        "ci": ci,
        "ci_confidence": confidence,
        "moved_in": moved_in,
        "moved_out": moved_out,
        "changed": changed,
        "concentration": moved_in / changed if changed else 0.0,
        "concentration_ci": conc_ci,
    }


def bootstrap_two_sample_diff_ci(
    a: np.ndarray, b: np.ndarray, *, seed: int, n_boot: int = 2000, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(a) - mean(b) for two independent samples (each resampled alone)."""
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    rng = np.random.default_rng(seed)
    da = a[rng.integers(0, len(a), size=(n_boot, len(a)))].mean(axis=1)
    db = b[rng.integers(0, len(b), size=(n_boot, len(b)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    diffs = da - db
    return float(np.percentile(diffs, tail)), float(np.percentile(diffs, 100 - tail))


def chi2_independence(codes_a: np.ndarray, codes_b: np.ndarray) -> float:
    """p-value that two categorical variables (integer codes) are independent (chi-square; 1.0 when degenerate)."""
    a_values, a = np.unique(np.asarray(codes_a), return_inverse=True)
    b_values, b = np.unique(np.asarray(codes_b), return_inverse=True)
    if len(a_values) < 2 or len(b_values) < 2:
        return 1.0
    table = np.zeros((len(a_values), len(b_values)))
    np.add.at(table, (a, b), 1)
    return float(stats.chi2_contingency(table).pvalue)
