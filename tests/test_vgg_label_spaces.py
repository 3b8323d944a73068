"""Three networks of one architecture with different label spaces, side by side (issue 18, item 3).

* ``examples/vgg-label-spaces``: TinyVGG (``tiny_vgg.py``) trained by ``train.py`` on digits, on drawn
  faces' expressions and on the same faces' valence, audited on shared unlabelled images with
  ``models:``: learned features of three layers (filters and activation maximisation), activation maps
  with the spike plot of two, Integrated Gradients; the comparison names each network's own classes.
* feature-visualisation's ``filters``: the learned filters (convolution weights) of the top channels.

The fast tests check the plan (it parses, three label spaces, one step per layer) and the filters exactly;
the slow test trains the three networks briefly and runs the shipped plan end to end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from xai_audit.api import LoadContext, check_figure
from xai_audit.cli import app
from xai_audit.plan import load_plan
from xai_audit.registry import make_plugin_manager

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "vgg-label-spaces"
NETWORKS = {"digits": [str(d) for d in range(10)],
            "expressions": ["happy", "sad", "neutral", "angry", "disgust", "fear", "surprise"],
            "valence": ["negative", "neutral", "positive"]}
STEPS = ["feature-visualisation@conv1_1", "feature-visualisation@conv2_2", "feature-visualisation@conv3_2",
         "neuron-maps@relu1_2", "neuron-maps@relu3_2", "integrated-gradients"]


def _example_copy(folder: Path, weights: bool) -> Path:
    for name in ("plan.yaml", "tiny_vgg.py", "train.py"):
        shutil.copy(EXAMPLE / name, folder / name)
    if weights:  # validation asks only that the files and the folder exist
        (folder / "models").mkdir()
        for name in NETWORKS:
            (folder / "models" / f"{name}.pt").write_bytes(b"")
        (folder / "data" / "shared").mkdir(parents=True)
    return folder / "plan.yaml"


# --------------------------------------------------------------------------- the plan


def test_the_example_plan_compares_three_label_spaces_with_one_step_per_layer(tmp_path):
    plan = load_plan(_example_copy(tmp_path, weights=True), make_plugin_manager())
    assert [name for name, _ in plan.models] == list(NETWORKS)
    for name, classes in NETWORKS.items():
        model = plan.for_model(name).model
        assert model.options.classes == classes
        assert model.options.module.endswith("tiny_vgg.py:TinyVGG")
        assert model.options.factory_kwargs == {"n_classes": len(classes)}
    assert [s.name for s in plan.explainers] == STEPS
    features = {s.name: s.options for s in plan.explainers if s.plugin.name == "feature-visualisation"}
    assert all(o.filters and o.channels == 8 and not o.rubbish for o in features.values())
    assert [o.layer for o in features.values()] == ["conv1_1", "conv2_2", "conv3_2"]
    assert [o.classes for o in features.values()] == [False, False, True]  # each class once, at the last layer
    assert [s.options.layer for s in plan.explainers if s.plugin.name == "neuron-maps"] == ["relu1_2", "relu3_2"]
    readme = (EXAMPLE / "README.md").read_text()
    assert "differs" in readme.lower() and "train.py" in readme and "plan.yaml" in readme


def test_the_three_networks_share_one_architecture_but_their_classifier():
    sys.path.insert(0, str(EXAMPLE))
    try:
        from tiny_vgg import TinyVGG
    finally:
        sys.path.remove(str(EXAMPLE))
    shapes = {k: {n: p.shape for n, p in TinyVGG(n_classes=k).named_parameters()} for k in (10, 7, 3)}
    assert {n for n in shapes[10] if shapes[10][n] != shapes[3][n]} == {"fc2.weight", "fc2.bias"}
    model = TinyVGG(n_classes=3).eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    names = dict(model.named_modules())
    assert all(f"{kind}{b}_{i}" in names for kind in ("conv", "bn", "relu") for b in (1, 2, 3) for i in (1, 2))


# --------------------------------------------------------------------------- learned filters


@pytest.fixture(scope="module")
def vgg():
    registry = make_plugin_manager()
    info = registry.get("model-adapter", "torch")
    torch.manual_seed(0)
    adapter = info.cls(info.cls.Options(module="tiny_vgg.py:TinyVGG", factory_kwargs={"n_classes": 3},
                                        classes=NETWORKS["valence"], input={"size": 32}))
    model = adapter.load(LoadContext(EXAMPLE))
    faces = registry.get("dataset", "synthetic-faces").cls
    data = faces(faces.Options(n=3, size=32)).load(LoadContext(EXAMPLE))
    return registry, model, [data[i] for i in range(3)]


def _features(registry, model, samples, **options):
    info = registry.get("explainer", "feature-visualisation")
    opts = info.cls.Options(steps=2, classes=False, rubbish=False, channels=3, **options)
    return info.cls(opts).explain(model, samples, np.array([0, 1, 2]), 0)


def test_the_filters_that_read_the_image_are_its_weights_as_colour_pictures(vgg):
    registry, model, samples = vgg
    explanation = _features(registry, model, samples, layer="conv1_1", filters=True)
    channels = [row["channel"] for row in explanation.tables["channels"]]
    assert [row["channel"] for row in explanation.tables["filters"]] == channels
    weight = model.module.conv1_1.weight.detach().numpy()  # (8, 3, 3, 3)
    images = explanation.arrays["filter_images"]
    assert images.shape == (3, 3, 3, 3)
    for tile, c in zip(images, channels):
        np.testing.assert_allclose(tile, weight[c] / (2 * np.abs(weight[c]).max()) + 0.5, rtol=1e-6)
        assert tile.min() >= 0 and tile.max() <= 1 and np.isclose(np.abs(tile - 0.5).max(), 0.5)
    figure = next(f for f in explanation.figures if f["images"] == {"array": "filter_images"})
    check_figure(figure, explanation.arrays)
    assert "Learned filters" in figure["title"] and figure["titles"] == [f"ch {c}" for c in channels]


def test_a_deeper_filter_is_drawn_by_its_strongest_input_kernels(vgg):
    registry, model, samples = vgg
    explanation = _features(registry, model, samples, layer="conv2_2", filters=True, filter_inputs=2)
    weight = model.module.conv2_2.weight.detach().numpy()  # (16, 16, 3, 3)
    images = explanation.arrays["filter_images"]
    assert images.shape == (3 * 2, 3, 3, 3)
    for r, row in enumerate(explanation.tables["filters"]):
        c = row["channel"]
        norms = np.sqrt((weight[c] ** 2).sum(axis=(1, 2)))
        assert row["inputs_shown"] == list(np.argsort(-norms)[:2]) and row["input_channels"] == 16
        for k, j in enumerate(row["inputs_shown"]):
            tile = images[2 * r + k]
            assert np.array_equal(tile[0], tile[2])  # grey
            np.testing.assert_allclose(tile[0], weight[c, j] / (2 * np.abs(weight[c]).max()) + 0.5, rtol=1e-6)
    figure = next(f for f in explanation.figures if f["images"] == {"array": "filter_images"})
    check_figure(figure, explanation.arrays)
    assert figure["columns"] == 2


def test_a_layer_without_a_convolution_says_so_and_filters_are_off_by_default(vgg):
    from xai_audit_inspect.features import conv_of_layer

    registry, model, samples = vgg
    explanation = _features(registry, model, samples, layer="relu1_1", filters=True)
    assert "filter_images" not in explanation.arrays and "filters" not in explanation.tables
    assert any("No filters drawn: layer 'relu1_1' has no convolution" in n for n in explanation.notes)
    plain = _features(registry, model, samples, layer="conv1_1")
    assert "filter_images" not in plain.arrays and not any("filters" in n for n in plain.notes)
    block = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 5, 3), torch.nn.ReLU())
    assert conv_of_layer(block) is block[2] and conv_of_layer(torch.nn.ReLU()) is None


# --------------------------------------------------------------------------- the comparison page


def test_the_comparison_draws_what_each_model_learned_one_model_after_another():
    from xai_audit.api import Explanation
    from xai_audit.report.artifacts import ReportArtifacts
    from xai_audit.report.comparison import build_comparison_context

    def explanation(shade: float, extra: bool) -> Explanation:
        figures = [
            {"kind": "images", "title": "Learned filters of 'conv1'", "images": {"array": "filter_images"},
             "titles": ["ch 0", "ch 1"], "caption": "filters"},
            {"kind": "lines", "title": "Spike plot", "x": [0, 1, 2], "series": [{"label": "a", "y": {"array": "spikes_0"}}]},
            {"kind": "heatmaps", "title": "maps", "maps": {"array": "filter_images"}},  # compared image by image
        ] + ([{"kind": "images", "title": "only here", "images": {"array": "class_images"}}] if extra else [])
        arrays = {"filter_images": np.full((2, 3, 3, 3), shade, np.float32), "spikes_0": np.arange(3, dtype=np.float32),
                  "class_images": np.zeros((1, 3, 4, 4), np.float32)}
        return Explanation(method="feature-visualisation", sample_ids=["a"], targets=np.array([0]),
                           maps=np.zeros((1, 4, 4), np.float32), signed=False, arrays=arrays, figures=figures)

    comparison = {"title": "t", "tool": {"name": "xai-audit", "version": "0"}, "same_data": True, "same_classes": False,
                  "models": [{"name": n, "adapter": "torch", "fingerprint": "0" * 16, "n": 1, "classes": c,
                              "accuracy": None, "ci": None, "findings": 0, "failures": 0}
                             for n, c in (("digits", ["0", "1"]), ("valence", ["negative", "positive"]))],
                  "pairs": [], "groups": [], "hypotheses": [], "effect_pairs": [], "explainers": ["fv"]}
    artifacts = {"digits": ReportArtifacts(explanations={"fv": explanation(0.2, True)}),
                 "valence": ReportArtifacts(explanations={"fv": explanation(0.8, False)})}
    learned = build_comparison_context(comparison, artifacts)["learned"]
    assert [(item["explainer"], item["title"]) for item in learned] == [("fv", "Learned filters of 'conv1'"), ("fv", "Spike plot")]
    filters = learned[0]["figures"]
    assert [f["caption"] for f in filters] == ["digits: filters", "valence: filters"]
    assert filters[0]["src"] != filters[1]["src"]  # each model's own weights
    assert build_comparison_context(comparison, {})["learned"] == []  # from results.json files: no arrays


# --------------------------------------------------------------------------- end to end (slow)


def _smaller(plan: dict) -> dict:
    """The shipped plan with smaller budgets for a test run."""
    changes = {"feature-visualisation": {"steps": 8}, "integrated-gradients": {"steps": 8}}
    for i, entry in enumerate(plan["explainers"]):
        name = next(iter(entry))
        plan["explainers"][i] = {name: {**entry[name], **changes.get(name, {})}}
    plan["explain"] = {"samples": 6, "trust": {"steps": 4, "sanity_samples": 2, "sanity_stages": 1}}
    return plan


@pytest.mark.slow
def test_the_example_trains_and_runs_end_to_end(tmp_path):
    path = _example_copy(tmp_path, weights=False)
    subprocess.run([sys.executable, str(tmp_path / "train.py"), "--epochs", "2", "--faces", "240", "--shared", "4"],
                   check=True, cwd=tmp_path, capture_output=True)
    assert len(list((tmp_path / "data" / "shared").glob("*.png"))) == 8
    path.write_text(yaml.safe_dump(_smaller(yaml.safe_load(path.read_text())), sort_keys=False))
    out = tmp_path / "audit"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--no-cache", "--quiet"])
    assert result.exit_code == 0, result.output
    explained = None
    for name, classes in NETWORKS.items():
        results = json.loads((out / name / "results.json").read_text())
        assert results["failures"] == [] and results["classes"] == classes
        explainers = results["explainers"]
        assert list(explainers) == STEPS and all(e["status"] == "ok" for e in explainers.values())
        explained = explained or explainers["integrated-gradients"]["sample_ids"]
        for step in STEPS:  # the same shared images explained by every network and every step
            assert explainers[step]["sample_ids"] == explained
        for layer in ("conv1_1", "conv2_2", "conv3_2"):
            tables = explainers[f"feature-visualisation@{layer}"]["tables"]
            assert len(tables["channels"]) == 8 and len(tables["filters"]) == 8
        assert [r["class"] for r in explainers["feature-visualisation@conv3_2"]["tables"]["class_images"]] == classes
        for layer, width in (("relu1_2", 8), ("relu3_2", 32)):
            maps = explainers[f"neuron-maps@{layer}"]
            assert maps["scalars"]["channels"] == width and len(maps["tables"]["top_channels"]) == len(explained)
        html = (out / name / "report.html").read_text()
        assert "Line plot of the summed activation of each of 32 channels for 4 image(s)." in html  # the spike plot
        assert "Learned filters: top 8 channels of &#39;conv1_1&#39;" in html
    comparison = json.loads((out / "comparison.json").read_text())
    assert [(m["name"], m["classes"]) for m in comparison["models"]] == list(NETWORKS.items())
    assert comparison["same_classes"] is False and set(comparison["explainers"]) == set(STEPS)
    assert all(p["verdict"] == "not tested" for p in comparison["pairs"])
    page = (out / "comparison.html").read_text()
    assert "the models name different classes" in page
    assert "What each model learned, side by side" in page
    for name in NETWORKS:  # each network's filters and spike plot, one after another
        assert f"alt=\"{name}: Learned filters: top 8 channels of &#39;conv2_2&#39;\"" in page
        assert f"alt=\"{name}: Line plot of the summed activation of each of 32 channels" in page
