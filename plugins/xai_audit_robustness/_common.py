"""Small helpers the robustness plugins share: group columns, the sign test, intervals as lists."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import stats

from xai_audit.api import Sample, wilson_ci


def group_columns(samples: Sequence[Sample]) -> dict[str, np.ndarray]:
    """Every group column the samples carry, as one string array per column (missing values are "")."""
    names = sorted({k for s in samples for k in s.groups})
    return {c: np.array([str(s.groups.get(c, "")) for s in samples]) for c in names}


def sign_test(diff: np.ndarray) -> float:
    """Two-sided exact sign test that paired differences are as often positive as negative (zeros dropped).

    With 0/1 outcomes (correct before minus correct after) this is exactly McNemar's test.
    """
    diff = np.asarray(diff, float)
    pos, neg = int(np.sum(diff > 0)), int(np.sum(diff < 0))
    if pos + neg == 0:
        return 1.0
    return float(stats.binomtest(pos, pos + neg, 0.5).pvalue)


def wilson(k: int, n: int) -> list[float] | None:
    ci = wilson_ci(int(k), int(n))
    return list(ci) if ci is not None else None


def as_list(ci: Any) -> list[float] | None:
    return None if ci is None else [float(ci[0]), float(ci[1])]


def seeded_subset(n: int, k: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of ``k`` of ``n`` items, in order (all when ``k`` is None or larger)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * float(x):.1f} %"
