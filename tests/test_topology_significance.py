"""Topology's significance tests beside the Monte Carlo: the published FER study's (tdads / TDApplied) universal
null distribution and bootstrap confidence sets, on clouds whose shape is known; and what is collapsed when only
isolated images are significant."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_topology import TOPOLOGY, noisy_circle, noisy_sphere

from conftest import plan_text
from xai_audit.audit import run_audit
from xai_audit.plan import load_plan
from xai_audit.run.cache import Cache
from xai_audit_topology.cloud import farthest_point_landmarks, fit_reduction
from xai_audit_topology.explainer import TopologyExplainer
from xai_audit_topology.options import TopologyOptions
from xai_audit_topology.persistence import EULER_GAMMA, Diagrams, assess, universal_statistic, universal_test


def _assess(cloud: np.ndarray, seed: int, method: str, dims=(0, 1, 2)):
    reduced = fit_reduction(cloud, 64).project(cloud)
    return assess(reduced, list(dims), lambda x, s: farthest_point_landmarks(x, 120, s), null_clouds=19, seed=seed,
                  method=method)


def test_the_universal_statistic_is_tdapplieds():
    # TDApplied's universal_null for Rips: A = 1, B = -gamma - A * mean(log log pi), p = exp(-exp(l))
    dgm = np.array([[1.0, 1.2], [1.0, 1.5], [0.5, 10.0], [2.0, np.inf]])
    loglog = np.log(np.log(dgm[:3, 1] / dgm[:3, 0]))
    expected = loglog - loglog.mean() - EULER_GAMMA
    assert np.allclose(universal_statistic(dgm, 1), expected)
    sig = universal_test(Diagrams([1], {1: dgm}, {}), [1], alpha=0.05)
    p = sig.p_values(1, expected)
    per_feature = np.exp(-np.exp(expected))
    assert np.allclose(p, 1 - (1 - per_feature) ** 3)  # the largest of the diagram's 3 finite features
    # the threshold is the statistic whose p-value is the level
    assert math.isclose(float(sig.p_values(1, np.array([sig.threshold[1]]))[0]), 0.05, rel_tol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_universal_law_finds_the_loop_of_a_circle_and_nothing_in_noise(seed):
    circle = _assess(noisy_circle(400, np.random.default_rng(seed)), seed, "universal")
    assert len(circle.significant(1)) == 1 and len(circle.significant(2)) == 0
    (loop,) = circle.significant(1)
    finite = circle.diagrams.finite(1)
    assert loop[1] / loop[0] == max(finite[:, 1] / finite[:, 0])  # the most persistent loop, by ratio
    assert circle.significance.method == "universal" and 1 in circle.significance.universal
    # components keep the Monte Carlo (the law covers loops and voids only)
    assert 0 in circle.significance.threshold and 0 not in circle.significance.universal_n
    noise = _assess(np.random.default_rng(seed + 10).standard_normal((400, 8)), seed, "universal")
    assert [len(noise.significant(k)) for k in (0, 1, 2)] == [0, 0, 0]


def test_the_universal_law_alone_leaves_components_untested():
    found = _assess(noisy_circle(300, np.random.default_rng(3)), 3, "universal", dims=(0, 1))
    reduced = fit_reduction(noisy_circle(300, np.random.default_rng(3)), 64).project(
        noisy_circle(300, np.random.default_rng(3)))
    alone = assess(reduced, [0, 1], lambda x, s: farthest_point_landmarks(x, 120, s), null_clouds=0, seed=3,
                   method="universal")
    assert 0 not in alone.significance.threshold and len(alone.significant(0)) == 0
    assert np.isnan(alone.significance.p_values(0, np.array([1.0]))).all()
    assert len(alone.significant(1)) == len(found.significant(1)) == 1


@pytest.mark.parametrize("seed", [0, 1])
def test_the_bootstrap_confidence_set_keeps_the_loop_of_a_circle(seed):
    found = _assess(noisy_circle(400, np.random.default_rng(seed)), seed, "bootstrap", dims=(0, 1))
    sig = found.significance
    assert sig.method == "bootstrap" and len(sig.bootstrap[1]) == 19
    (loop,) = found.significant(1)
    finite = found.diagrams.finite(1)
    assert loop[1] - loop[0] == max(finite[:, 1] - finite[:, 0])  # the most persistent loop
    # its confidence box stays off the diagonal: half its persistence beyond the bootstrap quantile
    assert (loop[1] - loop[0]) / 2 > sig.threshold[1]
    # p-value: the share of resamples at least that far from the data's diagram (at least 1 / (B + 1))
    assert sig.p_values(1, np.array([(loop[1] - loop[0]) / 2]))[0] == pytest.approx(1 / 20)
    assert sig.line(1, finite) is None and "bootstrap resamples" in sig.describe(1)


def test_a_sphere_keeps_its_void_under_the_universal_law():
    found = _assess(noisy_sphere(400, np.random.default_rng(0)), 0, "universal")
    assert len(found.significant(2)) == 1


def test_the_option_names_the_test():
    assert TopologyOptions().significance == "monte-carlo"
    for method in ("universal", "bootstrap"):
        assert TopologyOptions(significance=method).significance == method
    with pytest.raises(ValueError):
        TopologyOptions(significance="permutation")
    with pytest.raises(ValueError, match="unknown significance test"):
        assess(np.zeros((20, 2)), [0], lambda x, s: np.arange(len(x)), method="permutation")


def test_only_isolated_images_significant_are_said_so_not_collapsed():
    explainer = TopologyExplainer(TopologyOptions(collapse_steps=3))
    outliers = [{"dim": 0, "index": 0, "stat": 3.0, "strength": 1.0, "birth": 0.0, "death": 2.0, "images": [4]},
                {"dim": 0, "index": 1, "stat": 2.5, "strength": 0.5, "birth": 0.0, "death": 1.5, "images": [7, 9]}]
    # nothing about the model or the images is read: there is nothing to collapse
    assert explainer._collapse(None, None, None, None, None, outliers, "layer") is None
    note = explainer._no_collapse_note(outliers)
    assert "no loop or void is significant" in note and "3 isolated image(s)" in note
    # a component of many images is a structure, and is collapsed as before (not said to be isolated)
    cluster = [{**outliers[0], "images": [1, 2, 3, 4]}]
    assert "isolated" not in explainer._no_collapse_note(cluster)


@pytest.mark.parametrize("method", ["universal", "bootstrap"])
def test_each_test_runs_through_the_runner(write_plan, registry, method):
    topology = TOPOLOGY.replace("null_clouds: 4", f"null_clouds: 4, significance: {method}")
    outcome = run_audit(load_plan(write_plan(plan_text(topology)), registry), registry, cache=Cache(None))
    entry = outcome.results["explainers"]["topology"]
    assert entry["status"] == "ok", outcome.results["failures"]
    assert entry["options"]["significance"] == method
    said = {"universal": "universal law", "bootstrap": "bootstrap confidence set"}[method]
    assert any(said in note for note in entry["notes"]), entry["notes"]
