"""The topology explainer: significance on clouds of known shape, the collapse, and a run through the runner."""

from __future__ import annotations

import types

import numpy as np
import pytest
from torch import nn

from conftest import plan_text
from xai_audit.run.cache import Cache
from xai_audit.plan import load_plan
from xai_audit.audit import run_audit
from xai_audit import hookimpl
from xai_audit.registry import make_plugin_manager
from xai_audit.contract.types import Explanation, ExplainerPlugin, ModelAdapter
from xai_audit_topology.bottleneck import bottleneck
from xai_audit_topology.change import summarise
from xai_audit_topology.cloud import farthest_point_landmarks, fit_reduction, landmarks
from xai_audit_topology.collapse import collapse_feature
from xai_audit_topology.persistence import assess, rips, statistic
from xai_audit_topology.representatives import carriers
from xai_audit_topology.suggest import suggest
from xai_audit_topology.summaries import betti_curve, entropy, landscape


def _embed(shape: np.ndarray, dims: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    cloud = np.zeros((len(shape), dims))
    cloud[:, : shape.shape[1]] = shape
    return cloud + noise * rng.standard_normal(cloud.shape) / np.sqrt(dims)


def noisy_circle(n: int, rng: np.random.Generator, dims: int = 8) -> np.ndarray:
    t = rng.uniform(0, 2 * np.pi, n)
    return _embed(np.c_[np.cos(t), np.sin(t)], dims, 0.3, rng)


def noisy_sphere(n: int, rng: np.random.Generator, dims: int = 8) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return _embed(v / np.linalg.norm(v, axis=1, keepdims=True), dims, 0.3, rng)


def _counts(cloud: np.ndarray, seed: int) -> list[int]:
    reduced = fit_reduction(cloud, 64).project(cloud)
    found = assess(reduced, [0, 1, 2], lambda x, s: farthest_point_landmarks(x, 120, s), null_clouds=19, seed=seed)
    return [len(found.significant(k)) for k in (0, 1, 2)]


@pytest.mark.parametrize("seed", [0, 1])
def test_noisy_circle_has_one_significant_loop(seed):
    counts = _counts(noisy_circle(400, np.random.default_rng(seed)), seed)
    assert counts[1] == 1 and counts[2] == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_noisy_sphere_has_one_significant_void(seed):
    counts = _counts(noisy_sphere(400, np.random.default_rng(seed)), seed)
    assert counts[2] == 1


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_noise_has_no_significant_feature(seed):
    counts = _counts(np.random.default_rng(seed).standard_normal((400, 8)), seed)
    assert counts == [0, 0, 0]


def test_separate_clusters_are_significant_components():
    rng = np.random.default_rng(0)
    centres = 3.0 * rng.standard_normal((4, 8))
    cloud = np.repeat(centres, 100, axis=0) + 0.3 * rng.standard_normal((400, 8))
    assert _counts(cloud, 0)[0] == 3  # four clusters: three merges stand out


def test_rips_generators_point_at_the_edges_of_each_feature():
    cloud = noisy_circle(80, np.random.default_rng(0), dims=2)
    dgms = rips(cloud, [0, 1])
    dist = np.linalg.norm(cloud[:, None] - cloud[None], axis=-1)
    g = dgms.generators[1]
    assert np.allclose(dist[g[:, 0], g[:, 1]], dgms.finite(1)[:, 0], atol=1e-5)
    assert np.allclose(dist[g[:, 2], g[:, 3]], dgms.finite(1)[:, 1], atol=1e-5)
    loop = int(np.argmax(statistic(dgms.finite(1), 1)))
    cycle = carriers(cloud, 1, g[loop], *dgms.finite(1)[loop])
    angles = np.sort(np.arctan2(cloud[cycle, 1], cloud[cycle, 0]))
    assert np.diff(np.r_[angles, angles[0] + 2 * np.pi]).max() < np.pi / 2  # the cycle goes all the way round


def test_farthest_point_landmarks_cover_the_cloud():
    cloud = np.random.default_rng(0).random((500, 3))
    chosen = farthest_point_landmarks(cloud, 50, seed=0)
    assert len(set(chosen.tolist())) == 50
    cover = np.linalg.norm(cloud[:, None] - cloud[chosen][None], axis=-1).min(axis=1).max()
    rand = landmarks(cloud, 50, "random", 0)
    assert cover < np.linalg.norm(cloud[:, None] - cloud[rand][None], axis=-1).min(axis=1).max()


def test_pca_keeps_distances_of_a_low_rank_cloud():
    rng = np.random.default_rng(0)
    cloud = rng.standard_normal((300, 5)) @ rng.standard_normal((5, 200))
    red = fit_reduction(cloud, 16)
    assert red.variance_kept > 0.999
    z = red.project(cloud)
    assert np.allclose(np.linalg.norm(z[0] - z[1]), np.linalg.norm(cloud[0] - cloud[1]), rtol=1e-3)


def test_bottleneck_distance_on_small_diagrams():
    a = np.array([[0.0, 1.0]])
    assert bottleneck(a, a) == 0.0
    assert bottleneck(a, np.zeros((0, 2))) == pytest.approx(0.5)
    assert bottleneck(a, np.array([[0.1, 1.2]])) == pytest.approx(0.2)


def test_summaries_follow_giotto_tda_definitions():
    dgm = np.array([[0.0, 2.0], [1.0, 2.0], [0.5, np.inf]])
    assert betti_curve(dgm, np.array([0.5, 1.5, 2.0])).tolist() == [1, 2, 0]
    assert landscape(dgm, np.array([1.0, 1.5]), 2).tolist() == [[1.0, 0.5], [0.0, 0.5]]
    assert entropy(np.array([[0.0, 1.0], [0.0, 1.0]])) == pytest.approx(1.0)


# -- the collapse, on a model whose layer reads the mean colour -------------------------


class MeanColour(ModelAdapter):
    """Logits from the mean RGB of the image; the layer ``pool`` outputs that mean colour."""

    classes = ["a", "b"]

    def __init__(self):
        self.module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
        self.default_layer = "pool"

    def forward(self, images):
        return self.module(images)

    def layers(self):
        return {"pool": self.module[0]}

    def fingerprint(self):
        return "mean-colour"


def test_collapse_lowers_the_persistence_of_a_loop():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 2 * np.pi, 40))
    colours = 0.5 + 0.3 * np.c_[np.cos(t), np.sin(t), np.zeros_like(t)]
    images = np.repeat(np.repeat(colours[:, :, None, None], 6, axis=2), 6, axis=3).astype(np.float32)
    images += 0.02 * rng.standard_normal(images.shape).astype(np.float32)
    model = MeanColour()
    points = images.mean(axis=(2, 3))
    red = fit_reduction(points, 3)
    cloud = red.project(points)
    dgms = rips(cloud, [0, 1])
    loop = dgms.finite(1)[int(np.argmax(statistic(dgms.finite(1), 1)))]
    result = collapse_feature(
        model, images, cloud, np.arange(40), np.zeros(40, dtype=int), red, "pool", 1, tuple(loop),
        steps=15, step_size=0.05,
    )
    assert result.persistence[0] == pytest.approx(loop[1] - loop[0], rel=1e-4)
    assert result.persistence[-1] < 0.8 * result.persistence[0]
    assert result.modified and all(m.min() >= 0 and m.max() <= 1 for m in result.modified.values())


def test_change_summary_names_the_region_and_colour_that_changed():
    before = np.full((2, 3, 8, 8), 0.5, dtype=np.float32)
    after = before.copy()
    after[:, 0, :2, :] -= 0.3  # less red in the top rows: the "eyes"
    masks = {"eyes": np.zeros((8, 8), bool), "skin": np.ones((8, 8), bool)}
    masks["eyes"][:2] = True
    masks["skin"][:2] = False
    summary = summarise(before, after, [masks, masks])
    assert summary.enriched_regions == ["eyes"]
    assert "removed red" in summary.words and "eyes" in summary.words
    lines = [row["hypothesis"] for row in suggest(summary)]
    assert "- occlude-regions: {regions: [eyes]}" in lines and "- grayscale: {}" in lines


# -- the plugin through the runner ------------------------------------------------------

TOPOLOGY = "  - topology: {landmarks: 24, null_clouds: 4, collapse_steps: 3, dims: [0, 1], mapper_intervals: 3}\n"


def test_topology_runs_through_the_runner_on_every_sample(write_plan, registry):
    plan = load_plan(write_plan(plan_text(TOPOLOGY)), registry)
    outcome = run_audit(plan, registry, cache=Cache(None))
    entry = outcome.results["explainers"]["topology"]
    assert entry["status"] == "ok", outcome.results["failures"]
    assert {"features", "summary per layer"} <= set(entry["tables"])
    assert any("24 farthest-point landmarks" in note and "28 images" in note for note in entry["notes"])
    exp = outcome.explanations["topology"]
    assert exp.maps.shape[0] == len(exp.sample_ids) and not exp.signed
    assert set(exp.sample_ids) <= set(outcome.images)  # the report can draw every modified image
    kinds = {spec["kind"] for spec in exp.figures}
    assert {"diagram", "lines", "scatter", "graph"} <= kinds


class _Suggests(ExplainerPlugin):
    """Explains nothing much, and suggests three hypotheses: one the plan has, one new, one unknown."""

    name = "suggests"

    def explain(self, model, samples, targets, seed):
        maps = np.zeros((len(samples),) + samples[0].image.shape[1:], np.float32)
        return Explanation(
            method=self.name, sample_ids=[s.id for s in samples], targets=np.asarray(targets), maps=maps,
            signed=False, suggested_hypotheses=[
                {"plugin": "grayscale", "options": {}, "why": "colour moved"},
                {"plugin": "luminance", "options": {"factor": 0.3}, "why": "it got darker"},
                {"plugin": "no-such-hypothesis", "options": {}, "why": "?"},
            ],
        )


@pytest.mark.parametrize("asked", [True, False])
def test_suggested_hypotheses_are_tested_in_the_same_run_when_the_plan_asks(write_plan, asked):
    module = types.ModuleType("suggesting")
    module.register_explainers = hookimpl(lambda: [_Suggests])
    registry = make_plugin_manager(extra_plugins=[module])
    text = plan_text("  - suggests: {}\n", "  - grayscale: {}\n")
    if asked:
        text = text.replace("explain: {samples: 4}", "explain: {samples: 4, test_suggestions: true}")
    results = run_audit(load_plan(write_plan(text), registry), registry, cache=Cache(None)).results
    hyps = results["hypotheses"]
    if not asked:
        assert set(hyps) == {"grayscale"} and "suggestions" not in results["explainers"]["suggests"]
        return
    assert set(hyps) == {"grayscale", "luminance-from-suggests"}  # grayscale is in the plan already
    new = hyps["luminance-from-suggests"]
    assert new["status"] == "ok" and new["options"]["factor"] == 0.3
    assert new["suggested_by"] == "suggests" and new["why"] == "it got darker"
    assert new["p_value_adjusted"] is not None  # counted in the audit's Holm correction
    rows = results["explainers"]["suggests"]["suggestions"]
    assert [r["tested_as"] for r in rows] == ["grayscale", "luminance-from-suggests", None]
    assert any("no-such-hypothesis" in f["error"] for f in results["failures"])
