"""Tiny models and images for the conformance checks, built in code: nothing is downloaded.

* :func:`tiny_cnn`: one 3x3 conv (4 channels), an adaptive pool and a linear head
  (seeded random weights), behind a :class:`~xai_audit.api.ModelAdapter`; any image size.
* :func:`tiny_vit`: a two-block ``transformers`` ViT (32x32 images in 8x8 patches,
  hidden size 32) from a ``ViTConfig``, seeded; images of another size are resized.
  Needs ``transformers`` (imported only here).
* :func:`black_box`: the same model with no torch module (``module = None``), like an
  ONNX model: no gradients, no layers.
* :func:`tiny_samples`: drawn faces, float32 (3, H, W) in [0, 1], with labels, a
  ``skin_tone`` group and a boolean mask per :data:`~xai_audit.api.FACE_REGIONS` name.
* :class:`TinyDataset`: samples as a :class:`~xai_audit.api.Dataset`.

Building a model does not disturb torch's global random state.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from xai_audit.api import FACE_REGIONS, Dataset, ModelAdapter, Sample

#: class names of the tiny models and samples (in output order)
CLASSES = ["happy", "sad", "neutral", "angry", "disgust", "fear", "surprise"]
#: values of the ``skin_tone`` group of the tiny samples
TONES = ["I", "II", "III", "IV", "V", "VI"]
#: the ViT's input size (other display sizes are resized to it)
VIT_SIZE = 32

_SKIN = {"I": (0.96, 0.84, 0.74), "II": (0.90, 0.74, 0.62), "III": (0.80, 0.62, 0.48),
         "IV": (0.66, 0.48, 0.34), "V": (0.48, 0.33, 0.22), "VI": (0.32, 0.22, 0.15)}


class TorchAdapter(ModelAdapter):
    """A torch module that takes display-space images (N, 3, H, W) in [0, 1] as a ModelAdapter.

    ``normalise`` maps [0, 1] to [-1, 1] before the module; ``size`` resizes the images
    first (bilinear, differentiable) when they are another size.
    """

    def __init__(self, module: torch.nn.Module, classes: Sequence[str], *, default_layer: str | None,
                 name: str, size: int | None = None, call: str = "tensor"):
        self.module = module.eval()
        self.classes = list(classes)
        self.default_layer = default_layer
        self.device = "cpu"
        self._name = name
        self._size = size
        self._call = call

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32)
        if self._size is not None and tuple(x.shape[-2:]) != (self._size, self._size):
            x = torch.nn.functional.interpolate(x, size=(self._size, self._size), mode="bilinear", align_corners=False)
        x = (x - 0.5) / 0.5
        if self._call == "pixel_values":
            return self.module(pixel_values=x).logits
        return self.module(x)

    def fingerprint(self) -> str:
        h = hashlib.sha256(self._name.encode())
        for key, value in sorted(self.module.state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def layers(self) -> dict[str, Any]:
        return {name: m for name, m in self.module.named_modules() if name}

    def describe(self) -> dict[str, Any]:
        return {"model": self._name}


class BlackBoxAdapter(ModelAdapter):
    """Another adapter's forward without gradients or layers (``module = None``), like an ONNX model."""

    module = None
    default_layer = None
    #: read by the host: explainers that need layer hooks are refused for this model
    provides_hooks = False

    def __init__(self, inner: ModelAdapter):
        self._inner = inner
        self.classes = list(inner.classes)
        self.device = inner.device

    def forward(self, images: Any) -> torch.Tensor:
        with torch.no_grad():
            return self._inner.forward(torch.as_tensor(images).detach()).detach()

    def fingerprint(self) -> str:
        return "black-box:" + self._inner.fingerprint()


class _TinyCNN(torch.nn.Module):
    def __init__(self, n_classes: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(4)
        self.head = torch.nn.Linear(4 * 16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def tiny_cnn_module(n_classes: int = len(CLASSES), seed: int = 0) -> torch.nn.Module:
    """The tiny CNN as a plain ``torch.nn.Module`` (for a model adapter's ``package.module:factory``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _TinyCNN(n_classes).eval()


def tiny_cnn(classes: Sequence[str] = CLASSES, seed: int = 0) -> TorchAdapter:
    """A tiny CNN (random weights from ``seed``) behind the ModelAdapter interface; default layer ``conv``."""
    return TorchAdapter(tiny_cnn_module(len(classes), seed), classes, default_layer="conv", name=f"tiny-cnn-{seed}")


def tiny_vit(classes: Sequence[str] = CLASSES, seed: int = 0) -> TorchAdapter:
    """A two-block transformers ViT (random weights from ``seed``); default layer: the last block.

    Raises ImportError when ``transformers`` is not installed.
    """
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=VIT_SIZE, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=len(classes))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = ViTForImageClassification(config).eval()
    # the last transformer block (vit.encoder.layer.N or vit.layers.N, by transformers version)
    blocks = [name for name, _ in module.named_modules() if re.search(r"layers?\.\d+$", name)]
    return TorchAdapter(module, classes, default_layer=blocks[-1] if blocks else None, name=f"tiny-vit-{seed}",
                        size=VIT_SIZE, call="pixel_values")


def black_box(model: ModelAdapter) -> BlackBoxAdapter:
    """``model`` as a black box: ``module`` None, no layers, no gradients."""
    return BlackBoxAdapter(model)


# --------------------------------------------------------------------------- samples


def _face_regions(size: int, shift: tuple[float, float]) -> dict[str, np.ndarray]:
    """Disjoint masks covering every pixel once: a face with features, hair above it, background around it."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    yy, xx = yy - shift[0], xx - shift[1]
    face = ((yy - 0.56) / 0.36) ** 2 + ((xx - 0.5) / 0.30) ** 2 <= 1
    head = ((yy - 0.50) / 0.44) ** 2 + ((xx - 0.5) / 0.36) ** 2 <= 1
    hair = head & ~face & (yy < 0.6)

    def box(y0, y1, x0, x1):
        return face & (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)

    brows = box(0.34, 0.39, 0.28, 0.44) | box(0.34, 0.39, 0.56, 0.72)
    eyes = box(0.42, 0.49, 0.30, 0.44) | box(0.42, 0.49, 0.56, 0.70)
    nose = box(0.50, 0.64, 0.45, 0.55)
    mouth = box(0.70, 0.78, 0.36, 0.64)
    skin = face & ~(brows | eyes | nose | mouth)
    background = ~(face | hair)
    masks = {"eyes": eyes, "brows": brows, "nose": nose, "mouth": mouth, "hair": hair, "skin": skin,
             "background": background}
    return {name: masks[name] for name in FACE_REGIONS}


def tiny_samples(n: int = 6, size: int = 32, *, seed: int = 0, labelled: bool = True,
                 classes: Sequence[str] = CLASSES, prefix: str = "tiny") -> list[Sample]:
    """``n`` drawn faces of ``size`` x ``size``: labels ``i % len(classes)`` (None when not ``labelled``),
    ``groups = {"skin_tone": ...}`` cycling through :data:`TONES`, and a boolean mask per
    :data:`~xai_audit.api.FACE_REGIONS` name. Each image has its own colours, position and noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        tone = TONES[i % len(TONES)]
        label = i % len(classes)
        regions = _face_regions(size, tuple(rng.uniform(-0.05, 0.05, 2)))
        image = np.empty((3, size, size), np.float32)
        colours = {
            "background": rng.uniform(0.1, 0.9, 3),
            "hair": rng.uniform(0.0, 0.35, 3),
            "skin": np.array(_SKIN[tone]),
            "brows": rng.uniform(0.05, 0.25, 3),
            "eyes": rng.uniform(0.0, 0.3, 3),
            "nose": np.array(_SKIN[tone]) * 0.85,
            # the mouth's brightness follows the class, so a model can tell classes apart
            "mouth": np.array([0.55, 0.15, 0.2]) + 0.4 * label / max(len(classes) - 1, 1),
        }
        for name, mask in regions.items():
            image[:, mask] = np.asarray(colours[name], np.float32)[:, None]
        image += rng.normal(0, 0.04, image.shape).astype(np.float32)
        image = np.clip(image, 0.0, 1.0).astype(np.float32)
        out.append(Sample(id=f"{prefix}-{i:04d}", image=image, label=label if labelled else None,
                          groups={"skin_tone": tone}, regions=regions))
    return out


class TinyDataset(Dataset):
    """A list of samples as a Dataset (the tiny samples by default)."""

    group_names = ["skin_tone"]
    region_names = list(FACE_REGIONS)

    def __init__(self, samples: Sequence[Sample] | None = None, classes: Sequence[str] | None = CLASSES):
        self._samples = list(samples if samples is not None else tiny_samples())
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> Sample:
        return self._samples[index]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for s in self._samples:
            h.update(s.id.encode())
            h.update(np.ascontiguousarray(s.image).tobytes())
            h.update(str(s.label).encode())
        return h.hexdigest()
