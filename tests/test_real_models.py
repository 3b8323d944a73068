"""A real model on real photos (issue 17), on a tiny stand-in built here: a mini-Xception-like CNN
(1 input channel, separable-conv residual blocks, a conv classifier head with one channel per class
followed by global average pooling) saved as TorchScript, as a torch.export program and as a
safetensors state dict, audited over an unlabelled folder of grayscale photos. Nothing is downloaded.

* TorchScript and torch.export: every method that needs no layer hooks runs end to end through the
  CLI; the methods that read a layer (Grad-CAM, topology) are refused at validation, by name, with why.
* The safetensors state dict: every method runs, Grad-CAM and topology at the feature layer that
  feeds the conv head (not the head), and they say which layer and why.
* The unlabelled grayscale audit: no sentence of results.json or report.html mentions accuracy;
  grayscale is "not applicable" (the model sees one channel, which a grayscale copy keeps) and stays
  out of the Holm correction; topology's colour summary says not applicable; the region hypotheses
  (occlude-regions, mask-lower-face) run from masks stored as files beside the photos, offline.
"""

from __future__ import annotations

import html
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from xai_audit.cli import app

runner = CliRunner()

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
SIZE = 32

MINI_XCEPTION = textwrap.dedent(
    """
    import torch
    from torch import nn


    class SeparableConv(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
            self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

        def forward(self, x):
            return self.pointwise(self.depthwise(x))


    class Block(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.residual = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))
            self.sep1, self.bn1 = SeparableConv(cin, cout), nn.BatchNorm2d(cout)
            self.sep2, self.bn2 = SeparableConv(cout, cout), nn.BatchNorm2d(cout)
            self.pool = nn.MaxPool2d(3, stride=2, padding=1)

        def forward(self, x):
            shortcut = self.residual(x)
            x = torch.relu(self.bn1(self.sep1(x)))
            return self.pool(self.bn2(self.sep2(x))) + shortcut


    class MiniXception(nn.Module):
        # 1 channel in; the classifier is a conv with one output channel per class, globally average-pooled
        def __init__(self, n_classes=7):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.block1 = Block(8, 16)
            self.block2 = Block(16, 32)
            self.block3 = Block(32, 32)
            self.head = nn.Conv2d(32, n_classes, 3, padding=1)
            self.gap = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            x = self.block3(self.block2(self.block1(self.stem(x))))
            return torch.flatten(self.gap(self.head(x)), 1)


    def make(n_classes=7):
        return MiniXception(n_classes)
    """
)

INPUT = "{size: %d, channels: 1, mean: [0.5], std: [0.5]}" % SIZE
HOOKLESS_EXPLAINERS = """\
explainers:
  - integrated-gradients: {steps: 4}
  - saliency
  - occlusion: {window: 8, stride: 8}
  - lime: {samples: 40}
"""
LAYER_EXPLAINERS = """\
  - gradcam
  - topology: {dims: [0], collapse_dim: 0, collapse_steps: 3, null_clouds: 9}
"""
HYPOTHESES = """\
hypotheses:
  - grayscale
  - luminance: {factor: 0.05}
  - group-accuracy: {min_group_size: 5}
"""
TRUST = "explain: {samples: 3, trust: {steps: 4, sanity_samples: 2, sanity_stages: 2}}\n"
#: face parts drawn into every photo (rows, columns), stored as masks/<region>/<photo id>.png: an offline region source
PARTS = {"eyes": (8, 12, 6, 26), "brows": (5, 7, 6, 26), "nose": (13, 19, 13, 19), "mouth": (21, 25, 10, 22),
         "skin": (3, 29, 4, 28)}
REGION_HYPOTHESES = """\
  - occlude-regions: {regions: [eyes, mouth, lower_face]}
  - mask-lower-face
"""
MASK_FILES = "regions: {source: mask-files, path: masks}\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The model in every format, and 30 unlabelled grayscale photos with a group column."""
    from PIL import Image
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("real")
    (root / "mini_xception.py").write_text(MINI_XCEPTION)
    namespace: dict[str, Any] = {}
    exec(MINI_XCEPTION, namespace)
    torch.manual_seed(0)
    model = namespace["make"]().eval()
    save_file(model.state_dict(), str(root / "weights.safetensors"))
    example = torch.rand(2, 1, SIZE, SIZE)
    torch.jit.trace(model, example).save(str(root / "model.ts"))
    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}}
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=dynamic), str(root / "model.pt2"))
    torch.export.save(torch.export.export(model, (example[:1],)), str(root / "fixed_batch.pt2"))

    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    rows = ["path,label,camera"]
    for i in range(30):
        face = 0.2 + 0.6 * rng.random() + 0.3 * (xx if i % 2 else yy) * rng.choice([-1, 1])
        face = face + 0.15 * rng.standard_normal((SIZE, SIZE))
        cy, cx = rng.integers(8, SIZE - 8, 2)
        face[cy - 4 : cy + 4, cx - 4 : cx + 4] += rng.choice([-0.4, 0.4])
        Image.fromarray((np.clip(face, 0, 1) * 255).astype(np.uint8), mode="L").save(photos / f"p{i:03d}.png")
        for part, (top, bottom, left, right) in PARTS.items():
            mask = np.zeros((SIZE, SIZE), np.uint8)
            mask[top:bottom, left:right] = 255
            (root / "masks" / part).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / "masks" / part / f"p{i:03d}.png")
        rows.append(f"p{i:03d}.png,,{'A' if i < 15 else 'B'}")
    (photos / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def _plan(folder: Path, name: str, source: str, explainers: str, extra: str = TRUST, hypotheses: str = "") -> Path:
    text = (
        "seed: 0\n"
        "model:\n"
        "  adapter: torch\n"
        f"  {source}\n"
        f"  classes: [{', '.join(CLASSES)}]\n"
        f"  input: {INPUT}\n"
        "dataset: {loader: image-folder, path: photos, metadata: photos/metadata.csv}\n"
        + extra + explainers + HYPOTHESES + hypotheses
        + "report: {title: Emotion model on unlabelled photos}\n"
    )
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def _run(plan: Path, out: Path) -> dict[str, Any]:
    result = runner.invoke(app, ["run", str(plan), "--out", str(out), "--no-cache", "--quiet"])
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text())


# --------------------------------------------------------------------------- TorchScript and torch.export


@pytest.mark.parametrize("source", ["torchscript: model.ts", "exported: model.pt2"])
def test_layer_methods_are_refused_at_validation_by_name(folder, source):
    plan = _plan(folder, "refused", source, HOOKLESS_EXPLAINERS + LAYER_EXPLAINERS)
    result = runner.invoke(app, ["validate", str(plan)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr  # gradcam and topology, nothing else
    assert '"gradcam" reads a layer' in lines[0] and "explainers[4]" in lines[0]
    assert '"topology" reads a layer' in lines[1] and "explainers[5]" in lines[1]
    why = "TorchScript model is compiled" if "torchscript" in source else "torch.export program runs as one flat graph"
    assert all(why in line and "need layer hooks: gradcam, topology" in line for line in lines)
    # the same plan without them is valid
    ok = _plan(folder, "allowed", source, HOOKLESS_EXPLAINERS)
    assert runner.invoke(app, ["validate", str(ok)]).exit_code == 0


@pytest.mark.parametrize("source", ["torchscript: model.ts", "exported: model.pt2"])
def test_compiled_models_run_every_allowed_method_end_to_end(folder, tmp_path, source, monkeypatch):
    if source.startswith("exported"):  # the batch probe (memory measured without hooks) runs for TorchScript
        monkeypatch.setenv("XAI_AUDIT_BATCH_SIZE", "16")
    r = _run(_plan(folder, "compiled", source, HOOKLESS_EXPLAINERS), tmp_path / "out")
    assert r["failures"] == []
    page = (tmp_path / "out" / "report.html").read_text()
    for name in ("integrated-gradients", "saliency", "occlusion", "lime"):
        entry = r["explainers"][name]
        assert entry["status"] == "ok" and entry["n_samples"] == 3, name
        assert entry["trust"]["sanity"]["verdict"] in ("passes", "partly", "fails"), name  # the trust step ran
        # its cost in passes is stated (steps 4 -> 3 curve steps: 7 canvases an image, on the images the default
        # budget pays for: at least one), the plan's sanity size stands, its wall time is recorded
        budget = entry["trust"]["budget"]
        assert budget["steps"] == 3 and 1 <= budget["images"] <= 3 and budget["mode"] == "explainer", name
        assert entry["trust"]["model_passes"]["curve_forward_images"] == budget["images"] * 7
        assert entry["trust"]["model_passes"]["sanity_re_explanations"] == 2 * 2
        for step in (f"explainer {name}", f"trust {name}"):
            assert r["run"]["steps"][step]["seconds"] >= 0 and f">{step}<" in page, step  # "How this audit ran"
    description = r["provenance"]["model"]["description"]
    assert description["default_layer"] == "block3" and "layer_hooks" in description
    assert r["hypotheses"]["grayscale"]["verdict"] == "not applicable"


def test_memory_estimate_without_hooks_matches_the_hooked_one(folder):
    from xai_audit.contract.batching import bytes_per_sample
    from xai_audit.load.loading import load_model_and_data
    from xai_audit.plan import parse_plan
    from xai_audit.registry import make_plugin_manager

    registry = make_plugin_manager()
    estimates = {}
    for source in ("module: mini_xception.py:make\n  weights: weights.safetensors", "torchscript: model.ts",
                   "exported: model.pt2"):
        plan = parse_plan(_plan(folder, "memory", source, "").read_text(), registry, base_dir=folder)
        model, _ = load_model_and_data(plan)
        estimates[source.split(":")[0]] = (bytes_per_sample(model, (3, SIZE, SIZE), backward=True),
                                           bytes_per_sample(model, (3, SIZE, SIZE), backward=False))
        assert model.provides_hooks == (source.startswith("module"))
    hooked = estimates["module"]
    for kind in ("torchscript", "exported"):
        for measured, reference in zip(estimates[kind], hooked):
            assert 0.5 * reference <= measured <= 2 * reference, (kind, estimates)


def test_an_export_with_a_fixed_batch_size_runs_in_batches_of_that_size(folder):
    from xai_audit.load.loading import load_model_and_data
    from xai_audit.plan import parse_plan
    from xai_audit.registry import make_plugin_manager

    registry = make_plugin_manager()
    fixed, _ = load_model_and_data(parse_plan(_plan(folder, "fixed", "exported: fixed_batch.pt2", "").read_text(),
                                              registry, base_dir=folder))
    script, _ = load_model_and_data(parse_plan(_plan(folder, "ts", "torchscript: model.ts", "").read_text(),
                                               registry, base_dir=folder))
    images = torch.rand(5, 3, SIZE, SIZE, requires_grad=True)
    logits = fixed.forward(images)
    torch.testing.assert_close(logits, script.forward(images), atol=1e-5, rtol=1e-4)
    logits[:, 0].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


# --------------------------------------------------------------------------- a safetensors state dict, unlabelled


@pytest.fixture(scope="module")
def unlabelled(folder, tmp_path_factory) -> tuple[dict[str, Any], str]:
    """One audit of the state-dict model over the unlabelled photos, with every method: (results, report text)."""
    out = tmp_path_factory.mktemp("unlabelled") / "report"
    plan = _plan(folder, "state_dict", "module: mini_xception.py:make\n  weights: weights.safetensors",
                 HOOKLESS_EXPLAINERS + LAYER_EXPLAINERS,
                 extra=MASK_FILES + "explain: {samples: 3, trust: {enabled: false}}\n", hypotheses=REGION_HYPOTHESES)
    results = _run(plan, out)
    page = (out / "report.html").read_text()
    page = re.sub(r"<script.*?</script>|<style.*?</style>", " ", page, flags=re.S)
    page = re.sub(r"data:[^\"']*", " ", page)
    alts = " ".join(re.findall(r'(?:alt|title|aria-label)="([^"]*)"', page))
    text = html.unescape(re.sub(r"<[^>]+>", " ", page) + " " + alts)
    return results, re.sub(r"\s+", " ", text)


def test_a_safetensors_state_dict_runs_every_method_at_the_feature_layer(unlabelled):
    r, _ = unlabelled
    assert r["failures"] == []
    assert all(e["status"] == "ok" for e in r["explainers"].values()) and len(r["explainers"]) == 6
    assert r["provenance"]["model"]["description"]["default_layer"] == "block3"  # not the conv head
    gradcam = " ".join(r["explainers"]["gradcam"]["notes"])
    assert "Grad-CAM at the output of 'block3'" in gradcam
    assert "the last conv 'head' has one output channel per class (7)" in gradcam and "globally average-pooled" in gradcam
    topology = " ".join(r["explainers"]["topology"]["notes"])
    assert "Layer: the model's default layer, 'block3'" in topology and "layer block3" in topology


def test_the_region_hypotheses_run_offline_from_masks_beside_the_photos(unlabelled):
    r, text = unlabelled
    for name in ("occlude-regions", "mask-lower-face"):
        assert r["hypotheses"][name]["status"] == "ok", r["hypotheses"][name]
        assert r["hypotheses"][name]["verdict"] != "not applicable", r["hypotheses"][name]
    regions = r["provenance"]["regions"]
    assert regions["source"] == "mask-files" and len(regions["files"]) == 30 * len(PARTS)
    assert "occlude-regions" in text and "mask-lower-face" in text


def test_unlabelled_grayscale_audit_never_mentions_accuracy(unlabelled):
    r, text = unlabelled
    assert r["accuracy"] is None and r["samples"]["labelled"] is False

    def strings(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    # "group-accuracy" is the name of the plugin the plan asked for, not a sentence
    said = [s for s in strings(r) if re.search(r"accura", s.replace("group-accuracy", ""), re.I)]
    assert said == []
    page = text.replace("group-accuracy", "")
    assert not re.search(r"accura", page, re.I), re.findall(r".{80}accura.{40}", page, re.I)[:5]
    # what was measured instead
    assert "Predictions and confidence (no labels)" in text and "Predictions per group" in text
    assert "mean confidence" in text and "share of predictions" in text
    assert r["findings"], "the -95 % darkening is a finding: its sentences are checked too"


def test_grayscale_is_not_applicable_and_out_of_the_holm_correction(unlabelled):
    r, text = unlabelled
    gray = r["hypotheses"]["grayscale"]
    assert gray["verdict"] == "not applicable" and gray["p_value"] is None and gray["p_value_adjusted"] is None
    assert "the model takes one channel" in gray["details"]["reason"]
    counted = [e for h in r["hypotheses"].values() if h["status"] == "ok"
               for e in [h, *h.get("tests", [])] if e.get("p_value") is not None]
    assert r["multiple_testing"]["n_tests"] == len(counted) and r["multiple_testing"]["not_applicable"] == ["grayscale"]
    assert all(f["hypothesis"] != "grayscale" for f in r["findings"])
    assert "kept out of the audit's Holm correction" in text
    # topology changed the model's one channel: no colour in its summary
    topology = " ".join(r["explainers"]["topology"]["notes"])
    assert "Colour: not applicable" in topology and "colour rather than brightness" not in topology
    assert "change by colour (8-bit levels)" not in r["explainers"]["topology"]["tables"]
    suggested = [row["hypothesis"] for row in r["explainers"]["topology"]["tables"].get("suggested hypotheses", [])]
    assert not any("grayscale" in s for s in suggested)


def test_a_linear_head_keeps_the_last_conv_as_default_layer(folder):
    """The conv-head rule only applies to a conv classifier: a CNN with a linear head keeps its last conv."""
    from conftest import TINY_MODEL
    from xai_audit.load.loading import load_model_and_data
    from xai_audit.plan import parse_plan
    from xai_audit.registry import make_plugin_manager

    (folder / "tiny_linear.py").write_text(TINY_MODEL)
    text = ("model: {adapter: torch, module: tiny_linear.py:make, classes: [%s]}\n" % ", ".join(CLASSES)
            + "dataset: {loader: image-folder, path: photos, metadata: photos/metadata.csv}\n")
    model, _ = load_model_and_data(parse_plan(text, make_plugin_manager(), base_dir=folder))
    assert model.default_layer == "conv" and "last conv layer" in model.default_layer_reason


def test_skin_tone_cannot_be_estimated_from_grey_photos():
    """group-accuracy's skin-tone estimate reads colour: on grey photos it is not applicable, not a group 'unknown'."""
    from xai_audit.api import HypothesisContext, Sample
    from xai_audit.registry import make_plugin_manager

    rng = np.random.default_rng(0)
    samples = [Sample(id=f"g{i}", image=np.repeat(rng.random((1, SIZE, SIZE), dtype=np.float32), 3, axis=0))
               for i in range(12)]
    probs = np.full((12, len(CLASSES)), 1 / len(CLASSES), dtype=np.float32)
    context = HypothesisContext(model=None, samples=samples, probs=probs, classes=CLASSES, seed=0,
                                predict=lambda images: probs[: len(images)])
    plugin = make_plugin_manager().get("hypothesis", "group-accuracy").cls
    result = plugin(plugin.Options()).test(context)
    assert result.verdict == "not applicable" and result.p_value is None
    assert "no colour" in result.details["reason"] and "accura" not in result.claim


def test_only_a_change_the_model_cannot_receive_is_not_applicable():
    """The engine compares what the model receives (ModelAdapter.model_input), not what it predicts."""
    from xai_audit.api import InputSpec, ModelAdapter, Preprocess, to_grayscale
    from xai_audit.contract.interventions import same_model_input

    class Spec(ModelAdapter):
        classes = CLASSES

        def __init__(self, preprocess):
            self.preprocess = preprocess

        def forward(self, images):
            raise AssertionError("not called")

        def fingerprint(self):
            return "spec"

    images = np.random.default_rng(0).random((4, 3, SIZE, SIZE), dtype=np.float32)
    gray, rgb = Spec(Preprocess(InputSpec(channels=1))), Spec(Preprocess(InputSpec(channels=3)))
    assert gray.input_channels == 1 and rgb.input_channels == 3
    assert same_model_input(gray, images, to_grayscale(images)) is True
    assert same_model_input(rgb, images, to_grayscale(images)) is False
    assert same_model_input(gray, images, images * 0.5) is False
    assert same_model_input(Spec(lambda x: np.asarray(x)), images, images) is True
    assert same_model_input(Spec(None), images, images) is None
