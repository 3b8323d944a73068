"""Every registered explainer through the shipped conformance suite (xai_audit.testing), and the
method-specific tests the suite does not cover.

The suite checks each explainer on a tiny CNN and a tiny transformers ViT: one finite map per sample in
display space, the same maps twice under the same seed, explain_maps() equal to explain()'s maps, the
same map for an image whether it is explained alone or in a batch (explainers that explain the audited
set jointly, ``wants_all_samples``, are exempt from that one by design), valid figures, and a black-box
model for the explainers that need no gradients.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import EMOTIONS, TINY_MODEL
from xai_audit.contract.types import LoadContext, ModelAdapter, Sample
from xai_audit.registry import make_plugin_manager
from xai_audit.testing import parametrize_with_checks
from xai_audit.testing import tiny_vit as _tiny_vit

#: options that keep each built-in explainer fast on tiny inputs; anything else runs with its defaults
FAST_OPTIONS = {
    "integrated-gradients": {"steps": 6},
    "occlusion": {"window": 8, "stride": 8},
    "lime": {"samples": 40},
    "neuron-maps": {"shown": 1, "top": 3},
    "feature-visualisation": {"steps": 3, "rubbish_steps": 3, "channels": 2},
}
N_SAMPLES = 3

#: what the suite finds in the built-in explainers (test id -> reason), each marked xfail(strict=True)
KNOWN_FAILURES: dict[str, str] = {}


def _built_in_explainers() -> list:
    registry = make_plugin_manager()
    return [(registry.get("explainer", name).cls, FAST_OPTIONS.get(name, {})) for name in registry.names("explainer")]


@parametrize_with_checks(_built_in_explainers(), expected_failures=KNOWN_FAILURES)
def test_every_explainer_conforms(check):
    check()


def tiny_vit() -> ModelAdapter:
    pytest.importorskip("transformers")
    return _tiny_vit(EMOTIONS)


def tiny_cnn(registry, tmp_path: Path) -> ModelAdapter:
    """The tiny CNN through the torch model adapter (as a plan loads it)."""
    (tmp_path / "tiny_model.py").write_text(TINY_MODEL)
    info = registry.get("model-adapter", "torch")
    torch.manual_seed(0)
    return info.cls(info.cls.Options(module="tiny_model.py:make", classes=list(EMOTIONS))).load(LoadContext(tmp_path))


@pytest.fixture(scope="module")
def faces(registry) -> list[Sample]:
    info = registry.get("dataset", "synthetic-faces")
    dataset = info.cls(info.cls.Options(n=N_SAMPLES, size=32)).load(LoadContext(Path.cwd()))
    return [dataset[i] for i in range(N_SAMPLES)]


def _build(registry, name: str):
    info = registry.get("explainer", name)
    return info.cls(info.cls.Options(**FAST_OPTIONS.get(name, {})))


def test_gradcam_lays_vit_tokens_on_the_patch_grid(registry, faces):
    """A 32x32 image in 8x8 patches is 16 tokens after the class token: a 4x4 grid, upsampled."""
    vit = tiny_vit()
    exp = _build(registry, "gradcam").explain(vit, faces, np.array([0, 1, 2]), 0)
    assert exp.maps.shape == (3, 32, 32) and np.abs(exp.maps).max() > 0
    note = " ".join(exp.notes)
    assert "16 patch tokens on a 4x4 grid" in note and "1 prefix token" in note
    # only the class token reaches the classifier after the last block: the map is taken at its input
    assert f"input of '{vit.default_layer}'" in note


def test_gradcam_defaults_to_the_last_conv_of_a_cnn(registry, tmp_path, faces):
    cnn = tiny_cnn(registry, tmp_path)
    exp = _build(registry, "gradcam").explain(cnn, faces, np.array([0, 1, 2]), 0)
    assert "'conv'" in " ".join(exp.notes)


def test_lime_runs_on_a_grayscale_48px_model_with_enough_superpixels(registry, tmp_path):
    """A FER2013-style model: one channel, 48x48. lime's default quickshift leaves such a face in a few pieces."""
    (tmp_path / "tiny_model.py").write_text(TINY_MODEL.replace("nn.Conv2d(3, 4", "nn.Conv2d(1, 4"))
    info = registry.get("model-adapter", "torch")
    model = info.cls(info.cls.Options(module="tiny_model.py:make", classes=list(EMOTIONS),
                                      input={"channels": 1, "size": 48})).load(LoadContext(tmp_path))
    data = registry.get("dataset", "synthetic-faces")
    faces = [data.cls(data.cls.Options(n=2, size=48)).load(LoadContext(tmp_path))[i] for i in range(2)]
    gray = [Sample(id=s.id, image=np.repeat(s.image.mean(axis=0, keepdims=True), 3, axis=0)) for s in faces]
    exp = _build(registry, "lime").explain(model, gray, np.array([0, 3]), 0)
    assert exp.maps.shape == (2, 48, 48)
    assert exp.scalars["superpixels_min"] >= 15
    from skimage.segmentation import quickshift

    default = quickshift(gray[0].image.transpose(1, 2, 0).astype(float), kernel_size=4, max_dist=200, ratio=0.2)
    assert len(np.unique(default)) < exp.scalars["superpixels_min"]


def test_integrated_gradients_baselines_and_convergence(registry, tmp_path, faces):
    cnn = tiny_cnn(registry, tmp_path)
    info = registry.get("explainer", "integrated-gradients")
    from PIL import Image

    path = tmp_path / "grey.png"
    Image.fromarray(np.full((10, 10, 3), 128, np.uint8)).save(path)
    for options in ({"baseline": "black"}, {"baseline": "blurred"}, {"baseline": "uniform"},
                    {"baseline": "image", "baseline_image": str(path)}):
        exp = info.cls(info.cls.Options(steps=16, **options)).explain(cnn, faces, np.array([0, 1, 2]), 0)
        assert exp.scalars["convergence_delta_max"] < 0.05, options
    with pytest.raises(ValueError):
        info.cls.Options(baseline="image")


def test_integrated_gradients_internal_batch_size_does_not_change_the_maps(registry, tmp_path, faces):
    cnn = tiny_cnn(registry, tmp_path)
    info = registry.get("explainer", "integrated-gradients")
    maps = [info.cls(info.cls.Options(steps=8, internal_batch_size=b)).explain_maps(cnn, faces, np.array([0, 1, 2]), 0)
            for b in (1, 3, 8, 64)]
    for other in maps[1:]:
        np.testing.assert_allclose(other, maps[0], rtol=1e-4, atol=1e-7)


def test_integrated_gradients_and_occlusion_give_the_same_bits_at_any_batch_size(registry, tmp_path, faces):
    """The batch size only groups passes (never one point alone): where the model's kernels give each image the
    same bits in passes of 2, 3 or more (batching.batch_invariant: AVX2 CPUs; AVX-512 oneDNN picks conv kernels
    by batch size), maps and scalars are identical, not close; elsewhere they agree to float precision, and the
    audit keeps one batch size for such a model (test_reproducible)."""
    from xai_audit.contract import batching

    cnn = tiny_cnn(registry, tmp_path)
    targets = np.array([0, 1, 2])
    shape = tuple(faces[0].image.shape)
    for name, key, options in (("integrated-gradients", "internal_batch_size", {"steps": 8}),
                               ("occlusion", "perturbations_per_eval", {"window": 8, "stride": 4})):
        info = registry.get("explainer", name)
        backward = name == "integrated-gradients"
        layout = batching.prefers_channels_last(cnn, shape, backward=backward)
        exact = all(batching.batch_invariant(cnn, shape, grad, 64, layout)
                    for grad in ((False, True) if backward else (False,)))
        runs = [info.cls(info.cls.Options(**options, **{key: b})).explain(cnn, faces, targets, 0) for b in (2, 3, 7, 64)]
        for other in runs[1:]:
            if exact:
                np.testing.assert_array_equal(other.maps, runs[0].maps)
                assert other.scalars == runs[0].scalars
            else:
                np.testing.assert_allclose(other.maps, runs[0].maps, rtol=1e-4, atol=1e-6)
                assert other.scalars == pytest.approx(runs[0].scalars, rel=1e-4, abs=1e-6)
        assert runs[0].run["passes"] > runs[-1].run["passes"]  # the batch said how fast, and nothing else


def test_occlusion_equals_captum_occluding_the_image_itself(registry, tmp_path, faces):
    """The plugin occludes a visibility mask and composes the image itself; the maps must be captum's
    Occlusion over every channel of the image, at any grey level and batching."""
    from captum.attr import Occlusion

    cnn = tiny_cnn(registry, tmp_path)
    info = registry.get("explainer", "occlusion")
    images = torch.as_tensor(np.stack([s.image for s in faces]))
    targets = np.array([0, 3, 5])
    for window, stride, baseline, per_pass in [(8, 4, 0.0, None), (6, 3, 0.4, 5), (32, 8, 1.0, 1)]:
        ours = info.cls(info.cls.Options(window=window, stride=stride, baseline=baseline,
                                         perturbations_per_eval=per_pass)).explain_maps(cnn, faces, targets, 0)
        with torch.no_grad():
            plain = Occlusion(cnn.forward).attribute(images, sliding_window_shapes=(3, window, window),
                                                     strides=(3, stride, stride), baselines=baseline,
                                                     target=torch.as_tensor(targets))
        np.testing.assert_allclose(ours, plain.mean(dim=1).numpy(), rtol=1e-5, atol=1e-7)
        assert np.abs(ours).max() > 0


def test_batched_lime_draws_and_scores_the_same_neighbourhood_as_lime():
    """The vectorised neighbourhood, mean-colour image and batch size change nothing in lime's explanation."""
    from lime.lime_image import LimeImageExplainer

    from xai_audit_lime.batched import BatchedLimeImageExplainer
    from xai_audit_lime.explainer import LimeOptions, segment

    image = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    seg = segment(image, LimeOptions(min_segments=20), 0)

    def classify(batch):
        x = batch.numpy().transpose(0, 2, 3, 1) if isinstance(batch, torch.Tensor) else np.asarray(batch)
        score = x[:, :16, :16].std(axis=(1, 2, 3)) * 2  # texture of the top-left quadrant
        p = 1 / (1 + np.exp(-20 * (score - 0.5)))
        return np.stack([p, 1 - p], axis=1)

    with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):
        plain = LimeImageExplainer(random_state=3).explain_instance(
            image, classify, labels=(0,), top_labels=None, num_features=int(seg.max()) + 1, num_samples=200, batch_size=10,
            segmentation_fn=lambda _: seg)
    ours = BatchedLimeImageExplainer(random_state=3).explain_segments(image, seg, classify, 0, 200, 64)
    weights = [dict(plain.local_exp[0]), dict(ours.local_exp[0])]
    assert ours.score == pytest.approx(plain.score, rel=1e-6)
    assert weights[0].keys() == weights[1].keys()
    np.testing.assert_allclose([weights[1][k] for k in weights[0]], list(weights[0].values()), rtol=1e-6, atol=1e-9)
    top_left = set(np.unique(seg[:16, :16]).tolist())
    assert np.mean([w for k, w in weights[0].items() if k in top_left]) > np.mean(
        [w for k, w in weights[0].items() if k not in top_left])
