"""The shipped example plans of two published studies (issue 18, items 1 and 5), and the options they need.

* ``examples/fer-vit-topology``: the topological audit of a facial-expression ViT. Its slow test builds a
  tiny ViT and a tiny face-parsing SegFormer from configs (save_pretrained into a temporary folder, loaded
  by the transformers adapter's own loading code), writes drawn faces and masked faces as image folders,
  and runs the shipped plan with the CLI.
* ``examples/fer2013-mini-xception-lime``: LIME on a FER2013 mini-Xception. Its slow test writes a small
  FER2013-format CSV and the weights of a tiny mini-Xception, and runs the shipped plan.

The fast tests check that each shipped plan parses (a broken example fails the default suite) and the
options the plans use: token points for topology, occlusion groups, the masked-faces switch, LIME for
every class with the positive-evidence view, and the class that collects the errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from xai_audit.cli import app
from xai_audit.plan import parse_plan

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FER = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
runner = CliRunner()


# --------------------------------------------------------------------------- every shipped plan parses


@pytest.mark.parametrize("study", ["fer-vit-topology", "fer2013-mini-xception-lime"])
def test_the_shipped_example_plan_parses(registry, study):
    path = EXAMPLES / study / "plan.yaml"
    plan = parse_plan(path.read_text(), registry, filename=str(path), base_dir=path.parent)
    assert plan.explainers
    readme = (EXAMPLES / study / "README.md").read_text()
    assert "differs" in readme.lower() and "plan.yaml" in readme


def test_the_vit_example_plan_names_what_the_study_did(registry):
    path = EXAMPLES / "fer-vit-topology" / "plan.yaml"
    plan = parse_plan(path.read_text(), registry, filename=str(path), base_dir=path.parent)
    steps = {s.plugin.name: s for s in plan.hypotheses}
    assert set(steps) >= {"occlude-regions", "grayscale", "luminance", "dataset-shift", "group-accuracy"}
    assert steps["occlude-regions"].options.interventions() == {
        "all-features": ["eyes", "nose", "mouth", "hair"], "no-hair": ["eyes", "nose", "mouth"]}
    assert steps["luminance"].options.factor == pytest.approx(0.2)
    topology = next(s for s in plan.explainers if s.plugin.name == "topology")
    assert topology.options.tokens == "class"
    assert plan.regions is not None


# --------------------------------------------------------------------------- topology: one point per image


def test_a_token_sequence_becomes_one_point_per_image_of_the_hidden_size():
    from xai_audit_topology.activations import to_points

    act = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)  # (N, tokens, hidden)
    cls = to_points(act, "images", "mean", "class")
    mean = to_points(act, "images", "mean", "mean")
    assert cls.shape == mean.shape == (2, 3)
    assert torch.equal(cls, act[:, 0])
    assert torch.allclose(mean, act.mean(dim=1))
    conv = torch.rand(2, 4, 3, 3)  # a conv layer is still pooled over positions
    assert torch.allclose(to_points(conv, "images", "mean", "class"), conv.mean(dim=(2, 3)))


# --------------------------------------------------------------------------- occlusion groups


def test_occlusion_groups_are_one_test_each_and_checked(registry):
    from xai_audit_hypotheses.occlusion import OccludeRegionsOptions

    opts = OccludeRegionsOptions.model_validate({"groups": {"all": ["Eyes", "nose"], "mouth-only": ["mouth"]}})
    assert opts.interventions() == {"all": ["eyes", "nose"], "mouth-only": ["mouth"]}
    both = OccludeRegionsOptions.model_validate({"regions": ["hair"], "groups": {"face": ["eyes", "mouth"]}})
    assert list(both.interventions()) == ["hair", "face"]
    assert "lower_face" in OccludeRegionsOptions().interventions()  # without groups: the default regions
    for bad in ({"groups": {"eyes": ["eyes", "nose"]}, "regions": ["eyes"]}, {"groups": {"g": []}}, {"groups": {}}):
        with pytest.raises(ValueError):
            OccludeRegionsOptions.model_validate(bad)


def test_a_group_occludes_its_regions_together_in_one_holm_counted_test(registry, tmp_path):
    plan_path = tmp_path / "plan.yaml"
    (tmp_path / "tiny_model.py").write_text(_TINY_CNN)
    plan_path.write_text(
        "seed: 0\n"
        "model: {adapter: torch, module: tiny_model.py:make, classes: [happy, sad, neutral, angry, disgust, fear, "
        "surprise], input: {size: 32}}\n"
        "dataset: {loader: synthetic-faces, n: 28, size: 32}\n"
        "explain: {samples: 2, trust: {enabled: false}}\n"
        "hypotheses:\n"
        "  - occlude-regions: {groups: {features: [eyes, mouth], no-mouth: [eyes]}, fill: black}\n"
        "report: {formats: [json]}\n"
    )
    out = runner.invoke(app, ["run", str(plan_path), "--out", str(tmp_path / "out"), "--no-cache", "--quiet"])
    assert out.exit_code == 0, out.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    result = results["hypotheses"]["occlude-regions"]
    assert result["status"] == "ok", results.get("failures")
    regions = [row["region"] for row in result["breakdown"]["by region"]]
    assert regions == ["features (eyes, mouth)", "no-mouth (eyes)"]
    names = [t["name"] for t in result["tests"]]
    other = "no-mouth" if result["details"]["primary_region"] == "features" else "features"
    assert f"occlude {other}" in names
    assert result["details"]["groups"] == {"features": "eyes, mouth", "no-mouth": "eyes"}
    # the group test is one test of the Holm family: the hypothesis's own claim, and the other group
    assert results["multiple_testing"]["n_tests"] >= 2


def test_a_group_occludes_the_union_of_its_masks():
    from xai_audit_datasets import SyntheticFacesDataset, SyntheticFacesOptions
    from xai_audit_hypotheses.occlusion import fill_images, group_masks

    samples = [SyntheticFacesDataset(SyntheticFacesOptions(n=3, size=32))[i] for i in range(3)]
    union = group_masks(samples, ["eyes", "mouth"], "test")
    eyes = np.stack([s.regions["eyes"] for s in samples])
    mouth = np.stack([s.regions["mouth"] for s in samples])
    assert np.array_equal(union, eyes | mouth) and union.sum() > eyes.sum()
    images = np.stack([s.image for s in samples])
    filled = fill_images(images, union, "black")
    assert np.all(filled[:, :, union[0]][0] == 0) and np.array_equal(filled[:, :, ~union[0]][0], images[:, :, ~union[0]][0])


# --------------------------------------------------------------------------- masked faces


def test_masked_faces_cover_the_lower_face_and_only_it():
    from xai_audit_datasets import SyntheticFacesDataset, SyntheticFacesOptions

    plain = SyntheticFacesDataset(SyntheticFacesOptions(n=4, size=48))
    masked = SyntheticFacesDataset(SyntheticFacesOptions(n=4, size=48, masked=True))
    assert plain.fingerprint() != masked.fingerprint()
    assert plain.fingerprint() == SyntheticFacesDataset(SyntheticFacesOptions(n=4, size=48, masked=False)).fingerprint()
    for i in range(4):
        a, b = plain[i], masked[i]
        assert a.label == b.label
        assert a.regions["mouth"].any() and not b.regions["mouth"].any()  # the mask hides the mouth
        assert np.array_equal(a.regions["eyes"], b.regions["eyes"])  # and leaves the eyes
        changed = np.abs(a.image - b.image).max(axis=0) > 0
        rows = np.flatnonzero(changed.any(axis=1))
        eye_rows = np.flatnonzero(a.regions["eyes"].any(axis=1))
        assert rows.min() > eye_rows.max()  # nothing above the eyes changes
    images, _, _ = masked.arrays([0, 1])
    assert np.array_equal(images[1], masked[1].image)


# --------------------------------------------------------------------------- mini-Xception, LIME, the error sink


def test_the_mini_xception_is_the_published_architecture():
    from xai_audit_torch.mini_xception import FER_CLASSES, mini_xception

    model = mini_xception().eval()
    assert model.classes == FER_CLASSES
    assert 50_000 < sum(p.numel() for p in model.parameters()) < 65_000  # "about 60 000 parameters"
    separable = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(separable) == 8  # two separable convolutions in each of four residual modules
    assert model(torch.rand(3, 1, 48, 48)).shape == (3, 7)
    assert model.head.out_channels == 7  # a conv head, one channel per class, globally pooled
    with pytest.raises(ValueError):
        mini_xception(n_classes=3, classes=["a", "b"])


def _tiny_xception_adapter(registry, tmp_path):
    from xai_audit.api import LoadContext

    info = registry.get("model-adapter", "torch")
    torch.manual_seed(0)
    return info.cls(info.cls.Options(
        module="xai_audit_torch.mini_xception:mini_xception", factory_kwargs={"base": 4, "channels": [4, 8]},
        input={"size": 48, "channels": 1, "mean": [0.5], "std": [0.5]})).load(LoadContext(tmp_path))


def test_lime_explains_every_class_on_the_same_neighbourhood_and_shows_positive_evidence(registry, tmp_path):
    from xai_audit.api import check_figure
    from xai_audit_datasets import SyntheticFacesDataset, SyntheticFacesOptions
    from xai_audit_lime.explainer import positive_evidence

    model = _tiny_xception_adapter(registry, tmp_path)
    faces = [SyntheticFacesDataset(SyntheticFacesOptions(n=2, size=48))[i] for i in range(2)]
    info = registry.get("explainer", "lime")
    targets = np.array([3, 0])
    plain = info.cls(info.cls.Options(samples=60)).explain(model, faces, targets, 0)
    every = info.cls(info.cls.Options(samples=60, classes="all", positive_only=True, num_features=3,
                                      class_images=2)).explain(model, faces, targets, 0)
    np.testing.assert_array_equal(plain.maps, every.maps)  # the explained class's map does not change
    assert "classes" not in plain.tables and "positive_evidence" not in plain.arrays
    rows = every.tables["classes"]
    assert len(rows) == 2 * 7 and {r["class"] for r in rows} == set(FER)
    assert sum(r["explained class"] for r in rows) == 2
    for i, sample in enumerate(faces):
        class_maps = every.arrays[f"class_maps_{i}"]
        assert class_maps.shape == (7, 48, 48)
        np.testing.assert_array_equal(class_maps[0], every.maps[i])  # the explained class first
        assert not np.array_equal(class_maps[0], class_maps[1])
        mine = [r for r in rows if r["sample"] == sample.id]
        assert sum(r["probability"] for r in mine) == pytest.approx(1.0, abs=1e-4)
    assert every.arrays["positive_evidence"].shape == (2 * 7, 3, 48, 48)
    for spec in every.figures:
        check_figure(spec, every.arrays)
    # the view keeps the (at most) num_features most positive superpixels and greys out the rest
    seg = every.arrays["segments"][0]
    weights = np.array([every.maps[0][seg == k][0] for k in range(seg.max() + 1)])
    shown = positive_evidence(faces[0].image, seg, weights, 3)
    np.testing.assert_array_equal(shown, every.arrays["positive_evidence"][0])
    kept = [k for k in np.argsort(-weights, kind="stable")[:3] if weights[k] > 0]
    inside = np.isin(seg, kept)
    assert np.array_equal(shown[:, inside], faces[0].image[:, inside]) and np.all(shown[:, ~inside] == 0.5)


def test_the_class_that_collects_the_errors_is_found_and_its_images_explained():
    from xai_audit.api import Sample
    from xai_audit.run.examples import choose_examples, error_sink_of

    classes = ["a", "b", "c"]
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 1, 0])
    preds = np.array([2, 2, 0, 2, 1, 2, 2, 1, 2, 1])  # errors: 0->2 twice, 1->2 twice, 2->1, 0->1
    sink = error_sink_of(preds, labels, classes)
    assert sink["class"] == "c" and sink["collected"] == 4 and sink["errors"] == 6
    assert sink["from"] == [{"class": "a", "n": 2, "share": 0.5}, {"class": "b", "n": 2, "share": 0.5}]
    probs = np.full((10, 3), 0.05)
    probs[np.arange(10), preds] = 0.9
    samples = [Sample(id=f"s{i}", image=np.zeros((3, 4, 4), np.float32), label=int(labels[i])) for i in range(10)]
    none = choose_examples(samples, probs, labels, 2, classes)
    assert "error-sink" not in none.summary["cases"] and none.summary["error_sink"]["class"] == "c"
    chosen = choose_examples(samples, probs, labels, 2, classes, error_sink=3)
    case = chosen.summary["cases"]["error-sink"]
    assert case["n_audited"] == 4 and len(case["shown"]) == 3
    assert all(preds[int(sid[1:])] == 2 and labels[int(sid[1:])] != 2 for sid in case["shown"])
    assert {labels[int(sid[1:])] for sid in case["shown"]} == {0, 1}  # round-robin over the true classes
    assert set(int(s[1:]) for s in case["shown"]) <= set(chosen.indices.tolist())
    assert len(chosen.indices) <= 2 + 3


# --------------------------------------------------------------------------- end to end (slow)


def _write_faces(folder: Path, n: int, size: int, masked: bool) -> None:
    from PIL import Image

    from xai_audit_datasets import CLASSES, SyntheticFacesDataset, SyntheticFacesOptions

    folder.mkdir(parents=True)
    data = SyntheticFacesDataset(SyntheticFacesOptions(n=n, size=size, masked=masked, seed=1 if masked else 0))
    rows = ["path,label,skin_tone"]
    for i in range(n):
        sample = data[i]
        pixels = (np.clip(sample.image.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"face{i:03d}.png")
        rows.append(f"face{i:03d}.png,{CLASSES[sample.label]},{sample.groups['skin_tone']}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")


def _tiny_vit(folder: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=7, id2label=dict(enumerate(FER)),
                       label2id={c: i for i, c in enumerate(FER)})
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)


def _tiny_face_parser(folder: Path) -> None:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    labels = ["background", "skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "mouth", "u_lip", "l_lip", "hair"]
    torch.manual_seed(0)
    config = SegformerConfig(num_labels=len(labels), hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                             num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16,
                             id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    model = SegformerForSemanticSegmentation(config)
    with torch.no_grad():  # an untrained head: bias it so every label wins somewhere (a part left empty is no test)
        model.decode_head.classifier.bias.copy_(torch.linspace(-0.2, 0.2, len(labels)))
    model.save_pretrained(folder)
    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def _shrink(plan: dict[str, Any], changes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The plan with some steps' options changed (smaller budgets for a test run)."""
    for section in ("explainers", "hypotheses"):
        for i, entry in enumerate(plan.get(section, [])):
            name = entry if isinstance(entry, str) else next(iter(entry))
            if name in changes:
                options = {} if isinstance(entry, str) else dict(entry[name] or {})
                plan[section][i] = {name: {**options, **changes[name]}}
    return plan


def _run_example(study: str, folder: Path, changes: dict[str, dict[str, Any]], extra: dict[str, Any]) -> dict:
    plan = yaml.safe_load((EXAMPLES / study / "plan.yaml").read_text())
    plan = _shrink(plan, changes)
    plan.update(extra)
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    result = runner.invoke(app, ["run", str(path), "--out", str(folder / "out"), "--no-cache", "--quiet"])
    assert result.exit_code == 0, result.output
    return json.loads((folder / "out" / "results.json").read_text())


@pytest.mark.slow
def test_the_fer_vit_topology_example_runs_end_to_end(tmp_path):
    _tiny_vit(tmp_path / "models" / "fer-vit")
    _tiny_face_parser(tmp_path / "models" / "face-parser")
    _write_faces(tmp_path / "data" / "faces", 42, 32, masked=False)
    _write_faces(tmp_path / "data" / "faces-masked", 28, 32, masked=True)
    results = _run_example(
        "fer-vit-topology", tmp_path,
        {"topology": {"dims": [0, 1], "null_clouds": 4, "collapse_steps": 2, "landmarks": 30},
         "group-accuracy": {"min_group_size": 3}},
        {"explain": {"samples": 3, "trust": {"steps": 4, "sanity_samples": 2, "sanity_stages": 2}}},
    )
    assert not results["failures"], results["failures"]
    topology = results["explainers"]["topology"]
    cloud = topology["tables"]["cloud"][0]
    assert cloud["layer"] == "model.vit.encoder.layer.1" or cloud["layer"].endswith("layers.1")
    assert cloud["point from"].startswith("the class token")
    assert cloud["points"] == 42 and cloud["values per point"] == 32  # one point per image, of the hidden size
    assert topology["options"]["tokens"] == "class"
    occlusion = results["hypotheses"]["occlude-regions"]
    assert occlusion["details"]["groups"] == {"all-features": "eyes, nose, mouth, hair", "no-hair": "eyes, nose, mouth"}
    assert [row["region"].split(" ")[0] for row in occlusion["breakdown"]["by region"]] == ["all-features", "no-hair"]
    for name in ("grayscale", "luminance", "dataset-shift", "group-accuracy"):
        assert results["hypotheses"][name]["status"] == "ok", name
    assert results["hypotheses"]["luminance"]["options"]["factor"] == pytest.approx(0.2)
    assert results["hypotheses"]["dataset-shift"]["n"] or results["hypotheses"]["dataset-shift"]["details"]
    assert results["provenance"]["regions"]["description"]["regions"]
    assert "recommendations" in results


def _write_fer_csv(path: Path, n: int) -> None:
    """A FER2013-format CSV: drawn faces, 48x48 grayscale, emotion codes by FER2013's order."""
    from xai_audit_datasets import CLASSES, SyntheticFacesDataset, SyntheticFacesOptions

    path.parent.mkdir(parents=True)
    data = SyntheticFacesDataset(SyntheticFacesOptions(n=n, size=48))
    rows = ["emotion,pixels,Usage"]
    for i in range(n):
        sample = data[i]
        gray = (sample.image.mean(axis=0) * 255).round().astype(int)
        usage = "PrivateTest" if i % 6 else "Training"
        rows.append(f"{FER.index(CLASSES[sample.label])},{' '.join(map(str, gray.ravel()))},{usage}")
    path.write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_the_fer2013_lime_example_runs_end_to_end(tmp_path):
    from safetensors.torch import save_file

    from xai_audit_torch.mini_xception import mini_xception

    _write_fer_csv(tmp_path / "data" / "fer2013.csv", 72)
    (tmp_path / "models").mkdir()
    torch.manual_seed(0)
    save_file(mini_xception(base=4, channels=[4, 8]).state_dict(), str(tmp_path / "models" / "mini_xception.safetensors"))
    plan = yaml.safe_load((EXAMPLES / "fer2013-mini-xception-lime" / "plan.yaml").read_text())
    results = _run_example(
        "fer2013-mini-xception-lime", tmp_path, {"lime": {"samples": 80}},
        {"model": {**plan["model"], "factory_kwargs": {"base": 4, "channels": [4, 8]}},
         "explain": {**plan["explain"], "samples": 4, "trust": {"steps": 4, "sanity_samples": 2, "sanity_stages": 2}}},
    )
    assert not results["failures"], results["failures"]
    assert results["samples"]["n"] == 60  # the PrivateTest rows only
    examples = results["examples"]
    assert {"confident-correct", "confident-wrong", "borderline-correct", "borderline-wrong"} <= set(examples["cases"])
    sink = examples["error_sink"]
    assert sink["class"] in FER and sink["collected"] >= 1
    collected = examples["cases"]["error-sink"]
    assert 1 <= len(collected["shown"]) <= 4
    lime = results["explainers"]["lime"]
    assert lime["status"] == "ok"
    assert set(collected["shown"]) <= set(lime["sample_ids"])  # the collected images are explained
    assert lime["options"]["classes"] == "all" and lime["options"]["positive_only"] is True
    rows = lime["tables"]["classes"]
    assert len(rows) == 7 * len(lime["sample_ids"]) and {r["class"] for r in rows} == set(FER)
    report = (tmp_path / "out" / "report.html").read_text()
    assert "One LIME map per class" in report and "hidden but for the (at most) 5 superpixels" in report
    assert "collects the errors" in report


_TINY_CNN = """
import torch
from torch import nn


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(64, 7))
"""
