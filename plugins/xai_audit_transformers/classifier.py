"""The ``transformers`` model adapter: any image-classification model by hub id or folder.

Preprocessing follows the model's image processor (size, crop, mean, std),
applied to display-space images as a differentiable torch step so that
gradients reach the pixels. Class names come from ``id2label``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from xai_audit.api import (
    InputSpec,
    LoadContext,
    ModelAdapter,
    ModelAdapterPlugin,
    ModelError,
    Options,
    Preprocess,
)
from xai_audit_transformers.loading import (
    load_pretrained,
    model_files,
    processor_input_spec,
    resolve_id,
    weights_fingerprint,
)


class TransformersModelOptions(Options):
    id: str = Field(..., description="a local folder (save_pretrained) or a hub id in the local cache")
    revision: str | None = None
    input: InputSpec | None = Field(None, description="override the image processor's preprocessing")
    default_layer: str | None = Field(None, description="layer for Grad-CAM / activations")


class TransformersModelPlugin(ModelAdapterPlugin):
    name = "transformers"
    description = "A transformers image classifier (AutoModelForImageClassification + its image processor)."
    Options = TransformersModelOptions

    def load(self, context: LoadContext) -> ModelAdapter:
        from transformers import AutoModelForImageClassification

        opts: TransformersModelOptions = self.options
        model_id = resolve_id(opts.id, context.base_dir)
        model, processor = load_pretrained(AutoModelForImageClassification, model_id, opts.revision, context.device)
        spec = opts.input or processor_input_spec(processor)
        return TransformersModelAdapter(model, spec, model_id, opts, context.device)


class _LogitsOnly(torch.nn.Module):
    """Preprocess + model -> logits tensor, so hooks and captum see one plain module."""

    def __init__(self, model: torch.nn.Module, preprocess: Preprocess):
        super().__init__()
        self.model = model
        self.preprocess = preprocess

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=self.preprocess(images)).logits


class TransformersModelAdapter(ModelAdapter):
    def __init__(self, model: torch.nn.Module, spec: InputSpec, model_id: str, opts: TransformersModelOptions, device: str):
        id2label = getattr(model.config, "id2label", None) or {}
        n = int(getattr(model.config, "num_labels", len(id2label)))
        self.classes = [str(id2label.get(i, id2label.get(str(i), f"class_{i}"))) for i in range(n)]
        self.spec = spec
        self.model_id = model_id
        self.device = device
        self.hf_model = model
        self.module = _LogitsOnly(model, Preprocess(spec).to(device)).eval()
        self.default_layer = opts.default_layer or _default_layer(self.module)
        if self.default_layer not in dict(self.module.named_modules()):
            raise ModelError(f"model has no layer named '{self.default_layer}' (default_layer)")
        self._fingerprint: str | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images)

    def layers(self) -> dict[str, Any]:
        return {name: m for name, m in self.module.named_modules() if name}

    def files(self) -> list[Path]:
        return model_files(self.model_id)

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.hf_model, self.spec.model_dump_json(), self.classes)
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        config = self.hf_model.config
        return {
            "source": self.model_id,
            "architecture": (getattr(config, "architectures", None) or [type(self.hf_model).__name__])[0],
            "parameters": sum(p.numel() for p in self.hf_model.parameters()),
            "classes": len(self.classes),
            "input": self.spec.describe(),
            "default_layer": self.default_layer,
        }


def _default_layer(module: torch.nn.Module) -> str | None:
    """The last encoder block for a transformer (tokens), else the last conv layer."""
    names = [name for name, _ in module.named_modules()]
    blocks = [n for n in names if re.search(r"(^|\.)(encoder\.)?(layer|layers|blocks)\.\d+$", n)]
    if blocks:
        return blocks[-1]
    convs = [name for name, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[-1] if convs else None
