"""The statistics, on cases small enough to solve by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from xai_audit.contract.stats import (
    bootstrap_gap_ci,
    bootstrap_paired_diff_ci,
    bootstrap_two_sample_diff_ci,
    chi2_independence,
    class_gain_test,
    holm,
    mcnemar_exact,
    permutation_gap_test,
    prediction_shift_matrix,
    samples_for_ci_width,
    two_proportion_test,
    wilson_ci,
)


def test_wilson_interval_contains_the_estimate_and_is_none_for_no_data():
    lo, hi = wilson_ci(8, 10)
    assert lo < 0.8 < hi and 0 <= lo and hi <= 1
    assert wilson_ci(0, 0) is None


def test_mcnemar_counts_discordant_pairs_and_is_exact():
    before = np.array([1, 1, 1, 1, 1, 0, 1, 1], bool)
    after = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)
    p, b, c = mcnemar_exact(before, after)
    assert (b, c) == (4, 1)
    assert p == pytest.approx(sps.binomtest(4, 5, 0.5).pvalue)
    assert mcnemar_exact(before, before)[0] == 1.0


def test_holm_by_hand():
    # sorted p: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1 = 0.04); None stays None
    adjusted = holm([0.04, None, 0.01, 0.02])
    assert adjusted[1] is None
    assert adjusted[0] == pytest.approx(0.04) and adjusted[2] == pytest.approx(0.03) and adjusted[3] == pytest.approx(0.04)


def test_two_proportion_test_matches_the_z_test_and_uses_fisher_for_small_counts():
    p = two_proportion_test(90, 100, 70, 100)
    pooled = 160 / 200
    z = (0.9 - 0.7) / np.sqrt(pooled * (1 - pooled) * (2 / 100))
    assert p == pytest.approx(2 * sps.norm.sf(z))
    assert two_proportion_test(3, 4, 0, 4) == pytest.approx(sps.fisher_exact([[3, 1], [0, 4]]).pvalue)
    assert two_proportion_test(1, 0, 1, 2) == 1.0


def test_samples_for_ci_width_by_hand():
    # (2 * 1.96)^2 * 0.5 * 0.5 / 0.1^2 = 384.15 -> 385
    assert samples_for_ci_width(0.5, 0.10) == 385
    assert samples_for_ci_width(1.0, 0.10) == samples_for_ci_width(0.95, 0.10)  # clipped, never 0
    with pytest.raises(ValueError):
        samples_for_ci_width(0.5, 0)


def test_permutation_gap_test_finds_a_real_gap_and_not_a_null_one():
    groups = np.array(["a"] * 100 + ["b"] * 100)
    real = np.r_[np.ones(95), np.zeros(5), np.ones(70), np.zeros(30)].astype(bool)
    gap, p = permutation_gap_test(real, groups, seed=0, n_perm=999)
    assert gap == pytest.approx(0.25) and p == pytest.approx(1 / 1000)
    null = np.r_[np.ones(90), np.zeros(10), np.ones(90), np.zeros(10)].astype(bool)
    gap, p = permutation_gap_test(null, groups, seed=0, n_perm=999)
    assert gap == 0 and p == 1.0
    assert permutation_gap_test(real, np.array(["a"] * 200), seed=0) == (0.0, 1.0)


def test_bootstrap_intervals_bracket_the_truth():
    rng = np.random.default_rng(0)
    a = rng.random(400) < 0.9
    b = rng.random(400) < 0.7
    lo, hi = bootstrap_two_sample_diff_ci(a, b, seed=1)
    assert lo < a.mean() - b.mean() < hi and lo > 0
    lo, hi = bootstrap_paired_diff_ci(a, b, seed=1)
    assert lo < a.mean() - b.mean() < hi
    groups = np.array(["x"] * 400 + ["y"] * 400)
    lo, hi = bootstrap_gap_ci(np.r_[a, b], groups, "x", "y", seed=1)
    assert lo < a.mean() - b.mean() < hi


def test_chi2_independence():
    assert chi2_independence(np.zeros(10), np.arange(10)) == 1.0
    a = np.r_[np.zeros(100), np.ones(100)]
    b = np.r_[np.zeros(90), np.ones(10), np.ones(90), np.zeros(10)]
    assert chi2_independence(a, b) < 1e-10


def test_prediction_shift_matrix_counts_moves():
    m = prediction_shift_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_class_gain_test_by_hand():
    # 10 images: before 2 per class over 5 classes; after, 4 of the 8 non-"1" images move into class 1
    before = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    after = np.array([1, 0, 1, 1, 1, 2, 1, 3, 1, 4])
    g = class_gain_test(before, after, 5, seed=0)
    assert g["class_index"] == 1
    assert g["gain"] == pytest.approx(0.4)
    assert (g["moved_in"], g["moved_out"], g["changed"]) == (4, 0, 4)
    assert g["concentration"] == 1.0
    # exact McNemar: 4 discordant pairs all one way -> p = 2 * 0.5^4 = 0.125; Bonferroni over 5 classes
    assert g["p_value_unadjusted"] == pytest.approx(0.125)
    assert g["p_value"] == pytest.approx(min(1.0, 0.625))
    assert g["ci_confidence"] == pytest.approx(1 - 0.05 / 5)
    lo, hi = g["ci"]
    assert lo <= 0.4 <= hi


def test_class_gain_test_spread_changes_have_low_concentration():
    before = np.zeros(12, int)
    after = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    g = class_gain_test(before, after, 4, seed=0)
    assert g["changed"] == 9 and g["concentration"] == pytest.approx(3 / 9)
