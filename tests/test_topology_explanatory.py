"""Topology as an explanatory tool (issue 18, item 2): activation and latent landscapes of every level, averaged
over networks and followed along training; Mapper nodes shown by what activates them; the shipped example plan."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import nn

from xai_audit.api import ModelAdapter, Sample
from xai_audit.errors import PlanError
from xai_audit.plan import load_plan
from xai_audit.registry import make_plugin_manager
from xai_audit.testing import parametrize_with_checks
from xai_audit_topology.activations import activation_clouds, to_points
from xai_audit_topology.explainer import TopologyExplainer
from xai_audit_topology.landscapes import (
    WeightsError,
    mean_landscape,
    mean_landscape_norms,
    network_weights,
)
from xai_audit_topology.mapper import mapper_graph
from xai_audit_topology.summaries import landscape, landscape_norm, landscape_norms
from xai_audit_topology.topoact import node_views

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "topology-explanatory"


# -- landscapes: known diagrams, known values -----------------------------------------------------------------


def test_every_level_of_a_known_landscape():
    # tents (0, 2) and (1, 3): peaks 1 at t = 1 and t = 2, overlapping on [1, 2] where the lower one is λ2
    dgm = np.array([[0.0, 2.0], [1.0, 3.0]])
    t = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    levels = landscape(dgm, t, None)
    assert levels.shape == (2, 7)  # every level: one per finite feature
    np.testing.assert_allclose(levels[0], [0, 0.5, 1, 0.5, 1, 0.5, 0])
    np.testing.assert_allclose(levels[1], [0, 0, 0, 0.5, 0, 0, 0])


def test_nested_features_give_one_level_each_and_infinite_ones_none():
    # three tents centred at 3 with half-widths 3, 2, 1, and a feature that never dies (left out)
    dgm = np.array([[0.0, 6.0], [1.0, 5.0], [2.0, 4.0], [0.5, np.inf]])
    levels = landscape(dgm, np.array([3.0, 1.5, 4.5]), None)
    np.testing.assert_allclose(levels, [[3, 1.5, 1.5], [2, 0.5, 0.5], [1, 0, 0]])
    assert landscape(np.zeros((0, 2)), np.array([0.0, 1.0]), None).shape == (1, 2)


def test_exact_norms_of_every_level():
    dgm = np.array([[0.0, 2.0], [1.0, 3.0]])
    # λ1 = both tents less their overlap, λ2 = the overlap: a tent of half-width ½
    np.testing.assert_allclose(landscape_norms(dgm, 1), [1.75, 0.25])
    np.testing.assert_allclose(landscape_norms(dgm, 2) ** 2, [1.25, 1 / 12])
    np.testing.assert_allclose(landscape_norms(dgm, np.inf), [1.0, 0.5])
    np.testing.assert_allclose(landscape_norm(dgm, 2), np.sqrt(1.25 + 1 / 12))
    # one tent (b, d): ‖λ1‖₁ = (d − b)²/4, ‖λ1‖₂² = (d − b)³/12
    np.testing.assert_allclose(landscape_norms(np.array([[1.0, 4.0]]), 2) ** 2, [27 / 12])


def test_exact_norms_match_a_fine_riemann_sum_on_a_random_diagram():
    rng = np.random.default_rng(0)
    birth = rng.uniform(0, 2, 12)
    dgm = np.c_[birth, birth + rng.uniform(0.05, 1.5, 12)]
    t = np.linspace(0, 4, 400_001)
    levels = landscape(dgm, t, None)
    riemann = np.sqrt((levels ** 2).sum(axis=1) * (t[1] - t[0]))
    np.testing.assert_allclose(landscape_norms(dgm, 2), riemann, rtol=1e-3, atol=1e-6)


def test_mean_landscape_over_networks_keeps_every_level():
    one = np.array([[0.0, 2.0]])
    two = np.array([[0.0, 2.0], [0.0, 2.0]])
    t = np.array([0.0, 1.0, 2.0])
    mean = mean_landscape([one, two], t)
    np.testing.assert_allclose(mean, [[0, 1, 0], [0, 0.5, 0]])  # the second level: ½ (0 + tent)
    # the mean of two diagrams with different breakpoints: exact against a fine sum
    other = np.array([[0.5, 3.0]])
    grid = np.linspace(0, 3, 300_001)
    riemann = np.sqrt((mean_landscape([one, other], grid) ** 2).sum(axis=1) * (grid[1] - grid[0]))
    np.testing.assert_allclose(mean_landscape_norms([one, other]), riemann, rtol=1e-4)


# -- latent points -----------------------------------------------------------------------------------------------


class _Adapter(ModelAdapter):
    def __init__(self, module: nn.Module):
        self.module = module.eval()
        self.classes = ["a", "b"]

    def forward(self, images):
        return self.module(images[:, :1])

    def fingerprint(self) -> str:
        return "test"


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 2))


def test_latent_points_are_the_channel_vectors_at_every_position():
    act = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    points = to_points(act, "latent", "mean")
    assert points.shape == (2 * 4 * 5, 3)
    assert torch.equal(points[1 * 20 + 2 * 5 + 3], act[1, :, 2, 3])  # image 1, row 2, column 3

    model = _Adapter(_net(0))
    images = np.random.default_rng(0).uniform(0, 1, (5, 3, 8, 8)).astype(np.float32)
    cloud = activation_clouds(model, images, ["1"], cloud="latent")["1"]
    assert cloud.points.shape == (5 * 8 * 8, 4) and cloud.grid == (8, 8)
    assert cloud.owner.tolist() == np.repeat(np.arange(5), 64).tolist()


# -- other networks' weights ----------------------------------------------------------------------------------


def test_other_weights_are_read_and_the_models_own_put_back(tmp_path):
    model = _Adapter(_net(0))
    x = torch.rand(3, 3, 8, 8)
    own = model.forward(x).detach()
    torch.save(_net(1).state_dict(), tmp_path / "other.pt")
    with network_weights(model, tmp_path / "other.pt"):
        assert torch.allclose(model.forward(x), _net(1).eval()(x[:, :1]))
    assert torch.equal(model.forward(x).detach(), own)

    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "wrong.pt")
    with pytest.raises(WeightsError, match="wrong.pt: does not fit"):
        with network_weights(model, tmp_path / "wrong.pt"):
            pass
    assert torch.equal(model.forward(x).detach(), own)


# -- Mapper and what activates its nodes ------------------------------------------------------------------------


def _two_blobs(n: int = 60) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.r_[rng.normal(0, 0.3, (n, 5)), rng.normal(0, 0.3, (n, 5)) + 20.0]


def _components(graph, n_points: int) -> int:
    """Connected components of the Mapper graph, whose nodes hold nearly every point (a lone outlier, a cluster
    of one, makes no node)."""
    assert len(set(np.concatenate(graph.nodes).tolist())) >= 0.95 * n_points
    if not graph.edges:
        return len(graph.nodes)
    a, b = np.array(graph.edges).T
    adjacency = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(graph.nodes),) * 2)
    return connected_components(adjacency, directed=False)[0]


def test_mapper_of_two_well_separated_blobs_has_two_components():
    points = _two_blobs()
    lens = points[:, :2] - points[:, :2].mean(axis=0)
    graph = mapper_graph(points, lens, intervals=6, overlap=0.4, eps=2.0)  # within a blob, far below the gap
    assert _components(graph, len(points)) == 2
    for members in graph.nodes:  # no node mixes the blobs
        assert len(set((members >= 60).tolist())) == 1


def test_each_node_is_shown_by_the_images_that_activate_it():
    points = _two_blobs()
    owner = np.arange(len(points))
    images = np.zeros((len(points), 3, 4, 4), np.float32)
    images[60:] = 1.0  # the second blob's images are white
    predicted = np.r_[np.zeros(60, int), np.ones(60, int)]
    ids = [f"img-{i}" for i in range(len(points))]
    graph = mapper_graph(points, points[:, :2], intervals=4, overlap=0.3)
    views = node_views(graph, points, owner, images, predicted, ["black", "white"], ids, shown=3, examples=2)
    assert len(views.rows) == len(graph.nodes)
    assert all(row["share of the majority"] == 1.0 for row in views.rows)
    assert views.tiles.shape == (len(views.shown) * 3, 3, 4, 4)
    for k, node in enumerate(views.shown):
        white = views.rows[node]["majority predicted class"] == "white"
        np.testing.assert_allclose(views.tiles[3 * k], float(white))  # the node's mean image
        members = set(graph.nodes[node].tolist())
        assert {int(t.split("-")[1].split(" ")[0]) for t in views.titles[3 * k + 1: 3 * k + 3]} <= members
    assert len({frozenset(graph.nodes[i].tolist()) for i in views.shown}) == len(views.shown)  # no node twice


# -- the explainer with landscapes on ----------------------------------------------------------------------------


def test_topology_with_landscapes_averages_networks_and_follows_checkpoints(tmp_path):
    model = _Adapter(_net(0))
    for seed in (1, 2):
        torch.save(_net(seed).state_dict(), tmp_path / f"net-{seed}.pt")
    rng = np.random.default_rng(0)
    samples = [Sample(id=f"s{i}", image=rng.uniform(0, 1, (3, 8, 8)).astype(np.float32), label=i % 2)
               for i in range(24)]
    options = TopologyExplainer.Options(
        layer="5", layers=["1", "5", "6"], dims=[0, 1], landmarks=12, null_clouds=0, collapse_steps=0,
        mapper_intervals=3, landscapes=True, networks=[str(tmp_path / "net-1.pt")],
        checkpoints=[str(tmp_path / "net-1.pt"), str(tmp_path / "net-2.pt")],
    )
    exp = TopologyExplainer(options).explain(model, samples, np.array([s.label for s in samples]), 0)
    rows = exp.tables["activation landscapes"]
    assert {r["layer"] for r in rows} == {"1", "5", "6"}
    assert {r["images"] for r in rows} == {"all images", "a", "b"}
    assert all(r["networks"] == 2 and len(r["level norms"]) == r["levels"] for r in rows)
    assert any(r["levels"] > 1 for r in rows)
    assert [r["layer"] for r in exp.tables["latent landscapes"]] == ["1", "1"]  # the one conv layer, H0 and H1
    along = exp.tables["landscape norm per checkpoint"]
    assert len(along) == 2 * 3 * 2 and {r["file"] for r in along} == {f"{tmp_path.name}/net-1.pt",
                                                                     f"{tmp_path.name}/net-2.pt"}
    assert "mapper nodes" in exp.tables
    titles = [spec["title"] for spec in exp.figures]
    assert any(t.startswith("Activation landscape, every level") for t in titles)
    assert any(t.startswith("Latent landscape, every level") for t in titles)
    assert any("along training" in t for t in titles)
    # the model's own weights are back
    assert torch.equal(model.module[0].weight, _net(0)[0].weight)


@parametrize_with_checks([(TopologyExplainer, {"landscapes": True, "collapse_steps": 0, "null_clouds": 0,
                                                "landmarks": 12, "dims": [0, 1]})])
def test_topology_with_landscapes_conforms(check):
    check()


# -- the shipped example plan ------------------------------------------------------------------------------------


def _example_copy(folder: Path, weights: bool) -> Path:
    for name in ("plan.yaml", "tiny_net.py", "train.py"):
        shutil.copy(EXAMPLE / name, folder / name)
    if weights:  # validation only asks that the files exist
        for seed in range(3):
            (folder / "models" / f"seed-{seed}").mkdir(parents=True)
            for epoch in range(7):
                (folder / "models" / f"seed-{seed}" / f"epoch-{epoch}.pt").write_bytes(b"")
    return folder / "plan.yaml"


def test_the_example_plan_validates_and_reads_its_weight_files_from_its_folder(tmp_path):
    plan = load_plan(_example_copy(tmp_path, weights=True), make_plugin_manager())
    assert [s.name for s in plan.explainers] == ["gradcam", "occlusion", "topology"]
    topology = plan.explainers[2].options
    assert topology.landscapes and topology.pool == "flatten"
    assert topology.networks == [str(tmp_path / "models" / f"seed-{s}" / "epoch-6.pt") for s in (1, 2)]
    assert topology.checkpoints == [str(tmp_path / "models" / "seed-0" / f"epoch-{e}.pt") for e in range(7)]


def test_the_example_plan_names_a_missing_weight_file(tmp_path):
    plan = _example_copy(tmp_path, weights=True)
    (tmp_path / "models" / "seed-2" / "epoch-6.pt").unlink()
    with pytest.raises(PlanError, match=r"networks.*seed-2/epoch-6.pt.* not found"):
        load_plan(plan, make_plugin_manager())


def test_networks_without_landscapes_is_a_plan_error(tmp_path):
    plan = _example_copy(tmp_path, weights=True)
    plan.write_text(plan.read_text().replace("landscapes: true", "landscapes: false"))
    with pytest.raises(PlanError, match="set 'landscapes: true'"):
        load_plan(plan, make_plugin_manager())


@pytest.mark.slow
def test_the_example_runs_end_to_end(tmp_path):
    plan = _example_copy(tmp_path, weights=False)
    subprocess.run([sys.executable, str(tmp_path / "train.py")], check=True, cwd=tmp_path, capture_output=True)
    out = tmp_path / "audit"
    run = subprocess.run([sys.executable, "-m", "xai_audit.cli", "run", str(plan), "--out", str(out), "--no-cache"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["failures"] == []
    explainers = results["explainers"]
    assert {"gradcam", "occlusion", "topology"} <= set(explainers)
    assert all(explainers[name]["status"] == "ok" for name in ("gradcam", "occlusion", "topology"))
    tables = explainers["topology"]["tables"]
    rows = tables["activation landscapes"]
    assert {r["layer"] for r in rows} == {"relu1", "relu2", "relu3", "fc2"}
    assert {r["images"] for r in rows} == {"all images", *[str(d) for d in range(10)]}
    assert all(r["networks"] == 3 for r in rows)
    assert {r["layer gives"].split(" ")[0] for r in rows} == {"conv", "linear"}
    assert {r["layer"] for r in tables["latent landscapes"]} == {"relu1", "relu2"}
    assert len(tables["landscape norm per checkpoint"]) == 7 * 4 * 2
    assert tables["mapper nodes"]
    assert (out / "report.html").is_file()
