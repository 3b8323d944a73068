"""Face-parsing regions from a transformers semantic-segmentation model (e.g. a SegFormer).

The model's labels are mapped to the audit's regions (eyes, brows, nose,
mouth, hair, skin, background) by name, or by an explicit ``labels`` map in
the plan. Masks are computed at the model's resolution and resized to the
display image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from xai_audit.api import (
    FACE_REGIONS,
    LoadContext,
    ModelError,
    Options,
    Preprocess,
    RegionSource,
    RegionSourcePlugin,
)
from xai_audit_transformers.loading import (
    load_pretrained,
    model_files,
    processor_input_spec,
    resolve_id,
    weights_fingerprint,
)

#: label-name keywords -> region, tried in order (the first match wins)
KEYWORDS: list[tuple[str, str]] = [
    ("eye_g", ""), ("glass", ""),  # glasses are not a face part
    ("brow", "brows"), ("eye", "eyes"), ("nose", "nose"), ("mouth", "mouth"), ("lip", "mouth"),
    ("hair", "hair"), ("skin", "skin"), ("face", "skin"), ("neck", "skin"), ("ear", "skin"),
    ("background", "background"), ("cloth", "background"), ("hat", "background"),
]


class SegmentationOptions(Options):
    id: str = Field(..., description="a local folder (save_pretrained) or a hub id in the local cache")
    revision: str | None = None
    labels: dict[str, list[str]] | None = Field(
        None, description="region -> the model's label names; default: matched by name"
    )


class SegmentationRegionsPlugin(RegionSourcePlugin):
    name = "segmentation"
    description = "Region masks from a transformers semantic-segmentation (face-parsing) model."
    Options = SegmentationOptions

    def load(self, context: LoadContext) -> RegionSource:
        from transformers import AutoModelForSemanticSegmentation

        opts: SegmentationOptions = self.options
        model_id = resolve_id(opts.id, context.base_dir)
        model, processor = load_pretrained(AutoModelForSemanticSegmentation, model_id, opts.revision, context.device)
        id2label = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
        mapping = label_mapping(id2label, opts.labels)
        return SegmentationRegions(model, Preprocess(processor_input_spec(processor)).to(context.device), mapping, model_id, context.device)


def label_mapping(id2label: dict[int, str], explicit: dict[str, list[str]] | None) -> dict[int, str]:
    """Model label index -> region name (labels mapping to no region are left out)."""
    if explicit:
        unknown = [r for r in explicit if r not in FACE_REGIONS]
        if unknown:
            raise ModelError(f"regions.labels: unknown region {unknown[0]!r}; regions are {list(FACE_REGIONS)}")
        by_name = {name: i for i, name in id2label.items()}
        mapping = {}
        for region, names in explicit.items():
            for name in names:
                if name not in by_name:
                    raise ModelError(f"regions.labels.{region}: the model has no label {name!r}; it has {sorted(by_name)}")
                mapping[by_name[name]] = region
        return mapping
    mapping = {}
    for index, name in id2label.items():
        lowered = name.lower()
        region = next((r for key, r in KEYWORDS if key in lowered), "")
        if region:
            mapping[index] = region
    if not mapping:
        raise ModelError(f"none of the segmentation model's labels {sorted(id2label.values())} maps to a face region; give regions.labels")
    return mapping


class SegmentationRegions(RegionSource):
    def __init__(self, model: torch.nn.Module, preprocess: Preprocess, mapping: dict[int, str], model_id: str, device: str):
        self.model = model
        self.preprocess = preprocess
        self.mapping = mapping
        self.model_id = model_id
        self.device = device

    def regions(self, images: np.ndarray) -> list[dict[str, np.ndarray]]:
        x = torch.as_tensor(images, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            logits = self.model(pixel_values=self.preprocess(x)).logits  # (N, L, h, w)
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
            labels = logits.argmax(dim=1).cpu().numpy()  # (N, H, W)
        out = []
        for label_map in labels:
            masks = {region: np.zeros(label_map.shape, bool) for region in sorted(set(self.mapping.values()))}
            for index, region in self.mapping.items():
                masks[region] |= label_map == index
            out.append(masks)
        return out

    def fingerprint(self) -> str:
        return weights_fingerprint(self.model, sorted(self.mapping.items()), self.preprocess.spec.model_dump_json())

    def files(self) -> list[Path]:
        return model_files(self.model_id)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.model_id,
            "architecture": (getattr(self.model.config, "architectures", None) or [type(self.model).__name__])[0],
            "regions": sorted(set(self.mapping.values())),
        }
