"""mask-lower-face: draw a surgical face mask over the lower face and compare predictions."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import Field
from scipy import ndimage

from xai_audit.api import (
    HypothesisContext,
    HypothesisPlugin,
    HypothesisResult,
    InterventionOptions,
    Sample,
    intervention_result,
)
from xai_audit_hypotheses.occlusion import masks_for, needed_masks


class MaskLowerFaceOptions(InterventionOptions):
    color: tuple[float, float, float] = Field((0.62, 0.78, 0.9), description="mask colour, RGB in [0, 1]")
    preserves_label: bool = Field(
        False,
        description="true when the label does not depend on the lower face (e.g. identity, age); "
        "then a drain of predictions into one class is read as a shortcut",
    )


def draw_face_masks(images: np.ndarray, samples: Sequence[Sample], color: tuple[float, float, float]) -> np.ndarray:
    """Paint a pleated mask over the lower face (from the samples' region masks)."""
    masks = masks_for(samples, "lower_face", "mask-lower-face")
    h = images.shape[-2]
    grow = max(1, h // 48)
    masks = np.stack([ndimage.binary_dilation(m, iterations=grow) for m in masks])
    rows = np.arange(h, dtype=np.float32)[None, :, None]
    pleats = 1.0 - 0.12 * (np.sin(rows * (2 * np.pi / max(3.0, h / 12))) > 0.6)
    colour = np.asarray(color, np.float32).reshape(1, 3, 1, 1) * pleats[:, None]
    shade = images.mean(axis=1, keepdims=True) ** 0.25  # keep the scene's lighting on the mask
    return np.where(masks[:, None], colour * shade, images).astype(np.float32)


class MaskLowerFaceHypothesis(HypothesisPlugin):
    name = "mask-lower-face"
    description = "Draw a face mask over the lower face (from region masks) and compare predictions."
    Options = MaskLowerFaceOptions

    def augmentation(self, finding, result):
        return {"transform": "mask-lower-face"}

    def needs_regions(self) -> list[str]:
        return needed_masks(["lower_face"])

    def test(self, context: HypothesisContext) -> HypothesisResult:
        opts: MaskLowerFaceOptions = self.options
        return intervention_result(
            context, lambda images, samples: draw_face_masks(images, samples, opts.color),
            what="a face mask covers the lower face", options=opts, preserves_label=opts.preserves_label,
        )
