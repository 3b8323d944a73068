"""The shipped conformance suite (xai_audit.testing) on every built-in plugin that runs offline, and proof
that it fails where it should.

The explainers run it in test_explainers.py. Here: every hypothesis, data set, model adapter and region
source, with small options; the files they read (a tiny image folder, a FER2013 CSV, an ONNX export, a
saved ViT and SegFormer) are written once per module, before the first check runs. Then deliberately
broken plugins, each of which must fail the check that names its fault, and the pytest plugin's fixtures.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from xai_audit.api import (
    Dataset,
    DatasetPlugin,
    ExplainerPlugin,
    Explanation,
    HypothesisPlugin,
    HypothesisResult,
    ModelAdapterPlugin,
    ModelPasses,
    Options,
    RegionSource,
    RegionSourcePlugin,
)
from xai_audit.registry import make_plugin_manager
from xai_audit.testing import CLASSES, check_plugin, checks_for, parametrize_with_checks, tiny_samples
from xai_audit.testing.checks import SkipCheck

#: where the module's files go (created by the `files` fixture, removed after the module)
FILES = Path(tempfile.gettempdir()) / f"xai-audit-conformance-{os.getpid()}"

#: plan-style options that run each built-in offline and fast (a list: checked with each); paths are relative
#: to FILES. The second torch entry ("torch#2" in the test ids) is a TorchScript file, whose layers cannot be hooked.
OFFLINE_OPTIONS: dict[str, dict[str, dict | list[dict]]] = {
    "hypothesis": {
        "adversarial": {"max_images": 8, "steps": 3, "bisection": 3},
        "corruptions": {"corruptions": ["gaussian_noise", "defocus_blur", "frost"], "severities": [1, 3]},
        "dataset-shift": {"dataset": {"loader": "any: the suite's context loads its own tiny faces"}},
        "transform": {"callable": "numpy:flip", "kwargs": {"axis": 3}, "description": "the image is mirrored"},
    },
    "dataset": {
        "synthetic-faces": {"n": 8, "size": 32},
        "digits": {"split": "test"},
        "image-folder": {"path": "folder", "size": 32},
        "fer2013-csv": {"path": "fer.csv"},
    },
    "model-adapter": {
        "torch": [{"module": "xai_audit.testing.models:tiny_cnn_module", "classes": CLASSES},
                  {"torchscript": "tiny.ts", "classes": CLASSES}],
        "onnx": {"path": "tiny.onnx", "classes": CLASSES},
        "transformers": {"id": "vit"},
    },
    "region-source": {
        "segmentation": {"id": "segformer"},
        "mask-files": {"path": "masks"},
    },
}

#: built-ins that need an optional extra (plugin name -> the module it imports): skipped where it is not installed
EXTRAS = {"landmarks": "dlib"}

#: findings of the suite in built-in plugins (test id -> reason), each marked xfail(strict=True); none left
KNOWN_FAILURES: dict[str, str] = {}


def _entries() -> list:
    """Every registered plugin of the four kinds: with its offline options, its defaults where they validate,
    else skipped with the reason."""
    registry = make_plugin_manager()
    entries = []
    for kind, known in OFFLINE_OPTIONS.items():
        for name in registry.names(kind):
            cls = registry.get(kind, name).cls
            if name in EXTRAS and importlib.util.find_spec(EXTRAS[name]) is None:
                entries.append(pytest.param(None, id=f"{name}-extra-not-installed", marks=pytest.mark.skip(
                    reason=f"{kind} {name!r} needs {EXTRAS[name]}, an optional extra that is not installed")))
                continue
            if name in known:
                for options in known[name] if isinstance(known[name], list) else [known[name]]:
                    entries.append((cls, options))
                continue
            try:
                cls.Options()
            except Exception:
                entries.append(pytest.param(None, id=f"{name}-no-offline-options", marks=pytest.mark.skip(
                    reason=f"{kind} {name!r} has required options and no offline options here: add them to "
                           "OFFLINE_OPTIONS in tests/test_conformance.py")))
                continue
            entries.append((cls, {}))
    return entries


_ENTRIES = _entries()


@pytest.fixture(scope="module", autouse=True)
def files():
    """The files the data sets, adapters and region source read: written once, removed after the module."""
    FILES.mkdir(parents=True, exist_ok=True)
    try:
        _write_files(FILES)
        yield FILES
    finally:
        shutil.rmtree(FILES, ignore_errors=True)


def _write_files(folder: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(6):  # class sub-folders, two sizes, three modes
        path = folder / "folder" / ("cat" if i % 2 else "dog") / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = (rng.random((24 + 8 * (i % 2), 32, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).convert(["RGB", "L", "RGBA"][i % 3]).save(path)
    rows = ["emotion,pixels,Usage"] + [f"{e}," + " ".join(str((7 * k + e) % 256) for k in range(2304)) + f",{u}"
                                       for e, u in [(3, "Training"), (4, "PublicTest"), (6, "PrivateTest")]]
    (folder / "fer.csv").write_text("\n".join(rows) + "\n")

    from xai_audit.testing.models import tiny_samples

    for sample in tiny_samples(2, 32):  # the suite's images, their masks stored as files (mask-files)
        for name, mask in sample.regions.items():
            (folder / "masks" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / name / f"{sample.id}.png")

    from xai_audit.testing.models import tiny_cnn_module

    torch.jit.trace(tiny_cnn_module(), torch.rand(1, 3, 32, 32)).save(str(folder / "tiny.ts"))

    with warnings.catch_warnings():
        # the TorchScript-based exporter (deprecated), still the one for dynamic_axes
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(tiny_cnn_module(), torch.rand(1, 3, 32, 32), str(folder / "tiny.onnx"), input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)

    from transformers import (
        SegformerConfig,
        SegformerForSemanticSegmentation,
        SegformerImageProcessor,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessor,
    )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ViTForImageClassification(ViTConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, num_labels=len(CLASSES), id2label=dict(enumerate(CLASSES)),
            label2id={c: i for i, c in enumerate(CLASSES)})).save_pretrained(folder / "vit")
        ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                          image_std=[0.5] * 3).save_pretrained(folder / "vit")
        labels = ["background", "skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "mouth", "u_lip", "hair"]
        SegformerForSemanticSegmentation(SegformerConfig(
            num_labels=len(labels), hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
            num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16, id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)})).save_pretrained(folder / "segformer")
        SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder / "segformer")


@parametrize_with_checks([e for e in _ENTRIES if type(e) is tuple], base_dir=FILES,
                         expected_failures=KNOWN_FAILURES)
def test_built_in_plugin_conforms(check):
    check()


@pytest.mark.parametrize("entry", [e for e in _ENTRIES if type(e) is not tuple] or
                         [pytest.param(None, marks=pytest.mark.skip(reason="every built-in has offline options"))])
def test_built_ins_without_offline_options(entry):
    """Placeholder, one per built-in this module cannot run (skipped with the reason)."""


def test_every_built_in_kind_is_checked():
    kinds = {cls.kind for cls, _ in (e for e in _ENTRIES if type(e) is tuple)}
    assert kinds == {"hypothesis", "dataset", "model-adapter", "region-source"}


# --------------------------------------------------------------------------- the suite fails where it should


def _failed(cls, options=None, **kwargs) -> dict[str, str]:
    """Check name -> failure message, for every check of ``cls`` that fails."""
    out = {}
    for name, check in checks_for(cls, options, **kwargs):
        try:
            check()
        except SkipCheck:
            pass
        except AssertionError as exc:
            out[name] = str(exc)
    return out


class _MeanColour(ExplainerPlugin):
    """A conforming black-box explainer: the map is the image's brightness times the target's rank."""

    name = "mean-colour"
    description = "brightness, scaled by the target (a test double)"
    needs_gradients = False

    def maps(self, samples, targets, seed):
        return np.stack([s.image.mean(axis=0) * (1 + t) for s, t in zip(samples, targets)]).astype(np.float32)

    def explain(self, model, samples, targets, seed):
        return Explanation(method=self.name, sample_ids=[s.id for s in samples], targets=np.asarray(targets),
                           maps=self.maps(samples, targets, seed), signed=False)

    def model_passes(self, model, n, image_shape, maps_only=False):
        return ModelPasses()  # it never runs the model


class _BatchMax(_MeanColour):
    name = "batch-max"

    def maps(self, samples, targets, seed):
        maps = super().maps(samples, targets, seed)
        return maps / maps.max()  # normalised by the batch's maximum: depends on the other images


class _Unseeded(_MeanColour):
    name = "unseeded"

    def maps(self, samples, targets, seed):
        return super().maps(samples, targets, seed) + np.random.default_rng().random((len(samples), 1, 1))


class _GlobalRandom(_MeanColour):
    name = "global-random"

    def maps(self, samples, targets, seed):  # ignores its seed: the global state is whatever the caller left
        return super().maps(samples, targets, seed) + np.random.rand(len(samples), 1, 1)


def test_a_conforming_explainer_passes_everything():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a skip: no transformers-less ViT, a black box it handles
        check_plugin(_MeanColour)


def test_a_batch_dependent_explainer_fails_batch_independence_only():
    failed = _failed(_BatchMax)
    assert set(failed) == {"check_batch_independent@cnn", "check_batch_independent@vit"}
    message = failed["check_batch_independent@cnn"]
    assert message.startswith("explainer 'batch-max' (") and "failed check_batch_independent@cnn" in message
    assert "explained alone differs from its map in a batch of 3" in message
    with pytest.raises(AssertionError, match=r"explainer 'batch-max' .* failed 2 of 18 conformance checks:\n"
                                             r"  check_batch_independent@cnn: sample \d explained alone"):
        check_plugin(_BatchMax)


class _Boastful(_MeanColour):
    """States a forward pass an image that it never runs: its trust step would cost more than it does."""

    name = "boastful"

    def model_passes(self, model, n, image_shape, maps_only=False):
        return ModelPasses(forward=n)


def test_an_explainer_stating_passes_it_does_not_run_fails_the_passes_check():
    failed = _failed(_Boastful)
    assert set(failed) == {"check_model_passes@cnn", "check_model_passes@vit"}
    assert "states 1 forward and 0 forward + backward images for one image, but explain() ran 0 forward" in \
        failed["check_model_passes@cnn"]


@pytest.mark.parametrize("cls", [_Unseeded, _GlobalRandom])
def test_a_nondeterministic_explainer_fails_determinism(cls):
    with pytest.raises(AssertionError) as info:
        check_plugin(cls, models=("cnn",))
    message = str(info.value)
    assert f"explainer '{cls.name}'" in message
    assert "check_deterministic@cnn: two runs with seed 5 gave different maps" in message
    assert "not from the global random state" in message


class _WrongShape(_MeanColour):
    name = "wrong-shape"

    def maps(self, samples, targets, seed):
        return super().maps(samples, targets, seed)[:, ::2, ::2]  # model space, not display space


def test_maps_outside_display_space_fail_the_explanation_check():
    failed = _failed(_WrongShape, models=("cnn",))
    assert "maps have shape (3, 16, 16); expected (N, H, W) = (3, 32, 32)" in failed["check_explanation@cnn"]
    assert "on a black-box model" in failed["check_black_box"]


class _Fragile(HypothesisPlugin):
    """A conforming hypothesis: how many predictions change when the images are darkened."""

    name = "fragile"
    description = "predictions under darkening (a test double)"

    def test(self, context):
        images = context.images()
        after = context.predict(images * 0.5).argmax(axis=1)
        changed = int((after != context.probs.argmax(axis=1)).sum())
        return HypothesisResult(claim="Darkening changes predictions.", metric="flip rate", before=0.0,
                                after=changed / len(images), effect=changed / len(images), ci=(0.0, 1.0),
                                p_value=self.p_value(changed), verdict="inconclusive", n=len(images))

    def p_value(self, changed):
        return 0.5


class _BadP(_Fragile):
    name = "bad-p"

    def p_value(self, changed):
        return 2.0


class _InPlace(_Fragile):
    name = "in-place"

    def test(self, context):
        for s in context.samples:
            s.image[...] *= 0.5  # intervenes on the audited images themselves
        return super().test(context)


class _NeedsLabels(_Fragile):
    name = "needs-labels"

    def test(self, context):
        labels = context.labels
        assert labels is not None
        return super().test(context)


def test_a_conforming_hypothesis_passes_everything():
    check_plugin(_Fragile)


def test_a_p_value_of_two_fails_the_result_check():
    failed = _failed(_BadP)
    assert set(failed) == {"check_result", "check_unlabelled"}
    assert failed["check_result"] == (
        "hypothesis 'bad-p' (test_conformance._BadP) failed check_result: the result: p_value is 2.0, "
        "not None or in [0, 1]")
    with pytest.raises(AssertionError, match="check_result: the result: p_value is 2.0"):
        check_plugin(_BadP)


def test_a_hypothesis_that_changes_the_samples_or_crashes_unlabelled_is_caught():
    assert "changed the images or region masks of 28 samples in place" in _failed(_InPlace)[
        "check_leaves_samples_unchanged"]
    failed = _failed(_NeedsLabels)
    assert set(failed) == {"check_unlabelled"}
    assert "without labels it raised AssertionError" in failed["check_unlabelled"]
    assert "raise an xai_audit.api.XaiAuditError subclass" in failed["check_unlabelled"]


class _Faces(Dataset):
    classes = list(CLASSES)
    group_names = ["skin_tone"]
    region_names = ["eyes", "brows", "nose", "mouth", "hair", "skin", "background"]

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]

    def fingerprint(self):
        return "faces"


class _FacesPlugin(DatasetPlugin):
    name = "faces"
    description = "tiny faces (a test double)"

    def load(self, context):
        return _Faces(tiny_samples(5, 16))


class _DuplicateIds(_FacesPlugin):
    name = "duplicate-ids"

    def load(self, context):
        from dataclasses import replace

        samples = tiny_samples(5, 16)
        samples[3] = replace(samples[3], id=samples[1].id)
        return _Faces(samples)


class _ByteImages(_FacesPlugin):
    name = "byte-images"

    def load(self, context):
        from dataclasses import replace

        return _Faces([replace(s, image=(s.image * 255).astype(np.uint8), label=len(CLASSES) + 1)
                       for s in tiny_samples(3, 16)])


def test_a_conforming_dataset_passes_everything():
    check_plugin(_FacesPlugin)


def test_duplicate_ids_fail_the_unique_ids_check():
    failed = _failed(_DuplicateIds)
    assert set(failed) == {"check_unique_ids"}
    assert failed["check_unique_ids"].endswith("failed check_unique_ids: samples 1 and 3 have the same id 'tiny-0001'")


def test_unscaled_images_and_labels_out_of_range_are_caught():
    failed = _failed(_ByteImages)
    assert set(failed) == {"check_images", "check_labels"}
    assert "image is uint8, not float32" in failed["check_images"]
    assert "label 8 is outside 0..6 (7 classes)" in failed["check_labels"]


class _LooseOptions(Options):
    model_config = {"extra": "allow"}
    steps: int = 3


class _Loose(_MeanColour):
    name = "loose"
    Options = _LooseOptions


def test_options_that_accept_anything_are_caught():
    failed = _failed(_Loose, models=("cnn",))
    assert set(failed) == {"check_unknown_option_refused"}
    assert "a misspelt option in a plan would be ignored silently" in failed["check_unknown_option_refused"]


class _TrainMode(ModelAdapterPlugin):
    name = "train-mode"
    description = "a CNN with dropout left in training mode (a test double)"

    def load(self, context):
        from xai_audit.testing.models import TorchAdapter

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(4),
                                         torch.nn.Flatten(1), torch.nn.Dropout(0.5), torch.nn.Linear(64, len(CLASSES)))
        adapter = TorchAdapter(module, CLASSES, default_layer="0", name="train-mode")
        module.train()
        return adapter


def test_a_model_left_in_training_mode_is_caught():
    failed = _failed(_TrainMode)
    assert set(failed) == {"check_batch_independent"}
    assert "image 0 alone gets other scores than in a batch of 3" in failed["check_batch_independent"]


class _UnusedLayer(ModelAdapterPlugin):
    name = "unused-layer"
    description = "a default layer that forward() never runs (a test double)"

    def load(self, context):
        from xai_audit.testing.models import TorchAdapter, tiny_cnn_module

        module = tiny_cnn_module()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module.spare = torch.nn.Conv2d(3, 4, 3)
        return TorchAdapter(module, CLASSES, default_layer="spare", name="unused-layer")


def test_a_default_layer_that_never_runs_is_caught():
    failed = _failed(_UnusedLayer)
    assert set(failed) == {"check_layers"}
    assert "a forward hook on default_layer 'spare' never fires during forward()" in failed["check_layers"]


class _ByteMasks(RegionSourcePlugin):
    name = "byte-masks"
    description = "masks as 0/255 bytes (a test double)"

    def load(self, context):
        class Source(RegionSource):
            def regions(self, images):
                return [{"face": (np.ones(images.shape[-2:]) * 255).astype(np.uint8)} for _ in images]

            def fingerprint(self):
                return "bytes"

        return Source()


def test_region_masks_that_are_not_boolean_are_caught():
    failed = _failed(_ByteMasks)
    assert set(failed) == {"check_masks"}
    assert "region 'face' is uint8 (32, 32); expected a bool numpy array" in failed["check_masks"]


def test_parametrize_refuses_an_expected_failure_that_names_no_test():
    with pytest.raises(ValueError, match="expected_failures names no test: mean-colour-check_nothing"):
        parametrize_with_checks([_MeanColour], models=("cnn",), expected_failures={"mean-colour-check_nothing": "-"})


# --------------------------------------------------------------------------- the pytest plugin


def test_pytest_plugin_fixtures_and_one_line_parametrize(tmp_path):
    """An author's test file, run by pytest with the plugin as the pytest11 entry point loads it."""
    (tmp_path / "test_author.py").write_text(textwrap.dedent("""
        import numpy as np
        from xai_audit.api import ExplainerPlugin, Explanation, ModelPasses
        from xai_audit.testing import parametrize_with_checks

        class Brightness(ExplainerPlugin):
            name = "brightness"
            description = "how bright each pixel is"
            needs_gradients = False

            def model_passes(self, model, n, image_shape, maps_only=False):
                return ModelPasses()  # it reads the pixels, never the model

            def explain(self, model, samples, targets, seed):
                maps = np.stack([s.image.mean(axis=0) for s in samples])
                return Explanation("brightness", [s.id for s in samples], np.asarray(targets), maps, False)

        @parametrize_with_checks([Brightness], models=("cnn",))
        def test_conformance(check):
            check()

        def test_fixtures(tiny_cnn, tiny_black_box, tiny_samples):
            images = np.stack([s.image for s in tiny_samples])
            assert tiny_cnn.predict_proba(images).shape == (3, 7)
            assert tiny_black_box.module is None and tiny_black_box.predict_proba(images).shape == (3, 7)
    """))
    root = str(Path(__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    from importlib.metadata import entry_points

    installed = any(ep.value == "xai_audit.testing.pytest_plugin" for ep in entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "xai_audit.testing.pytest_plugin"]  # before `pip install -e .` registers it
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *plugin, "test_author.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "13 passed" in result.stdout and "skipped" not in result.stdout
    assert "PASSED test_author.py::test_conformance[brightness-check_batch_independent@cnn]" in result.stdout


def test_the_suite_imports_only_the_public_api():
    """xai_audit.testing is written as a third-party author would: xai_audit.api, torch, numpy, pytest,
    transformers and the standard library."""
    import ast

    allowed = {"xai_audit.api", "xai_audit.testing", "numpy", "torch", "pytest", "transformers",
               *sys.stdlib_module_names}
    folder = Path(__file__).parents[1] / "xai_audit" / "testing"
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert any(name == a or name.startswith(a + ".") for a in allowed), f"{path.name} imports {name}"
                assert not name.startswith("xai_audit.") or name.startswith(("xai_audit.api", "xai_audit.testing"))


def test_the_checks_raise_without_assert_statements():
    """A check must fail under `python -O` too, and read the same when pytest rewrites the asserts of the
    installed plugin's distribution: the suite raises AssertionError itself."""
    import ast

    for path in sorted((Path(__file__).parents[1] / "xai_audit" / "testing").glob("*.py")):
        asserts = [n.lineno for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Assert)]
        assert not asserts, f"{path.name}:{asserts[0]} uses an assert statement"
