"""Every model adapter on tiny real-format models the tests build: a ViT and a SegFormer
from a config (save_pretrained to a temporary folder), an ONNX export, a TorchScript file,
a trusted pickled model. Nothing is downloaded."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import EMOTIONS, TINY_MODEL
from xai_audit.run.cache import Cache
from xai_audit.cli import app
from xai_audit.errors import ModelError, PlanError
from xai_audit.plan import parse_plan
from xai_audit.audit import run_audit
from xai_audit.load.loading import load_model_and_data
from xai_audit.contract.types import LoadContext

DATASET = "dataset: {loader: synthetic-faces, split: test, n: 21, size: 32}\n"


def _tiny_module():
    namespace: dict = {}
    exec(TINY_MODEL, namespace)
    torch.manual_seed(0)
    return namespace["make"]().eval()


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=7, id2label=dict(enumerate(EMOTIONS)),
        label2id={c: i for i, c in enumerate(EMOTIONS)},
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def segformer_dir(tmp_path_factory):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    folder = tmp_path_factory.mktemp("segformer")
    labels = ["background", "skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "mouth", "u_lip", "hair", "eye_g"]
    config = SegformerConfig(
        num_labels=len(labels), hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1],
        decoder_hidden_size=16, id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)},
    )
    torch.manual_seed(0)
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_transformers_adapter_loads_a_saved_vit_and_keeps_gradients(vit_dir, registry, tmp_path):
    plan = parse_plan(f"model: {{adapter: transformers, id: {vit_dir}}}\n" + DATASET, registry, base_dir=tmp_path)
    model, dataset = load_model_and_data(plan)
    assert model.classes == EMOTIONS
    assert model.default_layer in ("model.vit.encoder.layer.1", "model.vit.layers.1")  # the last encoder block
    assert "resized" in model.describe()["input"] and "normalised" in model.describe()["input"]
    images = torch.rand(2, 3, 48, 48, requires_grad=True)  # display size differs: the processor resizes
    logits = model.forward(images)
    logits[:, 0].sum().backward()
    assert logits.shape == (2, 7) and images.grad is not None and images.grad.abs().sum() > 0
    # the preprocessing matches the processor's own (rescaled uint8 -> normalised)
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(vit_dir)
    pixels = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    theirs = processor(images=pixels, return_tensors="pt")["pixel_values"]
    ours = model.module.preprocess(torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1)[None])
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_full_audit_with_a_transformers_model_and_face_parsing_regions(vit_dir, segformer_dir, registry, tmp_path):
    text = (
        f"model: {{adapter: transformers, id: {vit_dir}}}\n"
        "dataset: {loader: image-folder, path: faces, metadata: faces/meta.csv}\n"
        f"regions: {{source: segmentation, id: {segformer_dir}}}\n"
        "explainers:\n  - integrated-gradients: {steps: 3}\n"
        "hypotheses:\n  - grayscale\n"
        "explain: {samples: 3}\n"
    )
    _write_image_folder(tmp_path / "faces", n=8)
    plan = parse_plan(text, registry, base_dir=tmp_path)
    outcome = run_audit(plan, registry, cache=Cache(tmp_path / "cache"))
    r = outcome.results
    assert r["failures"] == []
    assert r["provenance"]["regions"]["source"] == "segmentation"
    assert set(r["provenance"]["regions"]["description"]["regions"]) <= {"eyes", "brows", "nose", "mouth", "hair", "skin", "background"}
    assert r["provenance"]["model"]["files"], "the model folder's files are hashed"
    assert outcome.explanations["integrated-gradients"].maps.shape == (3, 32, 32)


def test_segmentation_masks_are_display_sized_and_mapped_by_name(segformer_dir, registry, tmp_path):
    plugin = registry.get("region-source", "segmentation").cls
    source = plugin(plugin.Options(id=str(segformer_dir))).load(LoadContext(base_dir=tmp_path))
    masks = source.regions(np.random.default_rng(0).random((2, 3, 40, 40)).astype(np.float32))
    assert len(masks) == 2
    assert set(masks[0]) == {"background", "skin", "nose", "eyes", "brows", "mouth", "hair"}  # eye_g -> no region
    assert all(m.shape == (40, 40) and m.dtype == bool for m in masks[0].values())
    union = np.sum([m.astype(int) for m in masks[0].values()], axis=0)
    assert union.max() <= 1  # no pixel in two regions


def test_segmentation_explicit_label_map_is_checked(segformer_dir, registry, tmp_path):
    plugin = registry.get("region-source", "segmentation").cls
    with pytest.raises(ModelError, match="has no label 'lips'"):
        plugin(plugin.Options(id=str(segformer_dir), labels={"mouth": ["lips"]})).load(LoadContext(base_dir=tmp_path))


def test_hub_id_offline_without_cache_says_what_to_download(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    plan = parse_plan("model: {adapter: transformers, id: someone/vit-face-expression}\n" + DATASET, registry, base_dir=tmp_path)
    with pytest.raises(ModelError) as info:
        load_model_and_data(plan)
    message = str(info.value)
    assert "someone/vit-face-expression" in message and "not in the local Hugging Face cache" in message
    assert "HF_HUB_OFFLINE" in message and "download" in message


def _onnx_file(tmp_path, channels=3):
    module = _tiny_module()
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(module, torch.rand(1, channels, 32, 32), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    return module, path


def test_onnx_adapter_matches_torch_and_refuses_gradient_methods(registry, tmp_path):
    module, path = _onnx_file(tmp_path)
    classes = "[" + ", ".join(EMOTIONS) + "]"
    plan = parse_plan(f"model: {{adapter: onnx, path: {path.name}, classes: {classes}}}\n" + DATASET
                      + "hypotheses:\n  - grayscale\n", registry, base_dir=tmp_path)
    model, _ = load_model_and_data(plan)
    assert model.module is None
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(model.forward(x), module(x), atol=1e-4, rtol=1e-4)
    r = run_audit(plan, registry, cache=Cache(None)).results
    assert r["hypotheses"]["grayscale"]["status"] == "ok"

    with pytest.raises(PlanError) as info:
        parse_plan(f"model: {{adapter: onnx, path: {path.name}, classes: {classes}}}\n" + DATASET
                   + "explainers:\n  - integrated-gradients\n", registry, filename="p.yaml", base_dir=tmp_path)
    (problem,) = info.value.problems
    assert problem.startswith("p.yaml:4: explainers[0]") and "needs gradients" in problem and "black box" in problem


def test_torchscript_file(registry, tmp_path):
    module = _tiny_module()
    torch.jit.trace(module, torch.rand(1, 3, 32, 32)).save(str(tmp_path / "tiny.ts"))
    classes = "[" + ", ".join(EMOTIONS) + "]"
    plan = parse_plan(f"model: {{adapter: torch, torchscript: tiny.ts, classes: {classes}}}\n" + DATASET, registry, base_dir=tmp_path)
    model, _ = load_model_and_data(plan)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model.forward(x), module(x))


def test_pickled_model_needs_trusted(registry, tmp_path, monkeypatch):
    import importlib

    (tmp_path / "pickled_tiny.py").write_text(TINY_MODEL)  # the pickle names the class by its module
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(importlib.import_module("pickled_tiny").make(), tmp_path / "whole.pt")
    classes = "[" + ", ".join(EMOTIONS) + "]"
    with pytest.raises(PlanError, match="can run code when loaded"):
        parse_plan(f"model: {{adapter: torch, model_file: whole.pt, classes: {classes}}}\n" + DATASET, registry, base_dir=tmp_path)
    plan = parse_plan(f"model: {{adapter: torch, model_file: whole.pt, trusted: true, classes: {classes}}}\n" + DATASET,
                      registry, base_dir=tmp_path)
    model, _ = load_model_and_data(plan)
    assert model.forward(torch.rand(1, 3, 32, 32)).shape == (1, 7)


def test_input_spec_mismatches_are_caught_at_validation(model_dir, write_plan):
    base = textwrap.dedent(
        """\
        model:
          adapter: torch
          module: tiny_model.py:make
          weights: weights.pt
          classes: [a, b, c]
          {extra}
        dataset: {{loader: synthetic-faces, n: 7, size: 32}}
        """
    )
    runner = CliRunner()
    too_few = write_plan(base.format(extra=""), "few.yaml")
    result = runner.invoke(app, ["validate", str(too_few)])
    assert result.exit_code == 2 and "(1, 7), expected (batch, 3) for 3 classes" in result.stderr

    gray = write_plan(base.replace("[a, b, c]", "[" + ", ".join(EMOTIONS) + "]").format(extra="input: {channels: 1}"), "gray.yaml")
    result = runner.invoke(app, ["validate", str(gray)])
    assert result.exit_code == 2 and "first conv layer takes 3 channel(s), but model.input.channels is 1" in result.stderr


def test_grayscale_input_spec_feeds_a_one_channel_model(registry, tmp_path):
    from xai_audit.contract.inputs import InputSpec, Preprocess

    spec = InputSpec(size=48, channels=1, mean=[0.5], std=[0.5])
    x = torch.rand(2, 3, 64, 64)
    y = Preprocess(spec)(x)
    assert y.shape == (2, 1, 48, 48) and -1.0 <= float(y.min()) and float(y.max()) <= 1.0
    crop = Preprocess(InputSpec(size=40, resize="shorter-side", crop=32))(torch.rand(1, 3, 40, 80))
    assert crop.shape == (1, 3, 32, 32)


def _write_image_folder(folder, n):
    from PIL import Image

    folder.mkdir(parents=True)
    rows = ["path,label,skin_tone"]
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(folder / f"img{i}.png")
        rows.append(f"img{i}.png,{EMOTIONS[i % 7]},{'I' if i % 2 else 'VI'}")
    (folder / "meta.csv").write_text("\n".join(rows) + "\n")


def test_an_adapter_exposes_its_modules_layers_by_default():
    from xai_audit.api import ModelAdapter, resolve_layer

    class Plain(ModelAdapter):
        classes = ["a", "b"]

        def __init__(self, module):
            self.module = module

        def forward(self, images):
            return self.module(images)

        def fingerprint(self):
            return "plain"

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    assert list(Plain(net).layers()) == ["0", "1", "2"]
    assert resolve_layer(Plain(net), "0")[1] is net[0]
    with pytest.raises(ValueError, match="exposes no layers"):
        resolve_layer(Plain(None), "0")


@pytest.mark.parametrize("model_id", ["./models/fer-vit", "models/fer/vit", "~/no-such-folder/vit"])
def test_a_model_id_that_is_a_path_names_the_missing_folder_and_asks_no_hub(model_id, registry, tmp_path, monkeypatch):
    import transformers

    def no_network(*args, **kwargs):
        raise AssertionError("a path-like id must not reach from_pretrained")

    monkeypatch.setattr(transformers.AutoModelForImageClassification, "from_pretrained", no_network)
    plan = parse_plan(f"model: {{adapter: transformers, id: '{model_id}'}}\n" + DATASET, registry, base_dir=tmp_path)
    with pytest.raises(ModelError, match="does not exist .*is a path, not a hub id"):
        load_model_and_data(plan)


def test_a_hub_id_in_the_local_cache_loads_from_it_without_asking_the_hub(vit_dir, registry, tmp_path, monkeypatch):
    import shutil

    import transformers

    snapshot = tmp_path / "hub" / "models--someone--tiny-vit" / "snapshots" / "0123abc"
    shutil.copytree(vit_dir, snapshot)
    (tmp_path / "hub" / "models--someone--tiny-vit" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-vit" / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    seen = []
    original = transformers.AutoModelForImageClassification.from_pretrained.__func__

    def spy(cls, model_id, *args, **kwargs):
        seen.append(kwargs.get("local_files_only"))
        return original(cls, model_id, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForImageClassification, "from_pretrained", classmethod(spy))
    plan = parse_plan("model: {adapter: transformers, id: someone/tiny-vit}\n" + DATASET, registry, base_dir=tmp_path)
    model, _ = load_model_and_data(plan)
    assert seen == [True] and model.classes
