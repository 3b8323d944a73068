"""face-boxes: region masks from fixed boxes, for data sets of aligned, centred faces.

Every box is (top, left, bottom, right) as fractions of the image's height and
width. ``skin`` is the face box less the parts; ``background`` is everything
outside the face box.

    regions:
      source: face-boxes
      boxes: {mouth: [0.62, 0.3, 0.8, 0.7]}   # only what differs from the defaults
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from xai_audit.api import FACE_REGIONS, LoadContext, Options, RegionSource, RegionSourcePlugin, hookimpl

Box = tuple[float, float, float, float]

#: the parts of a face centred in the image, looking at the camera
DEFAULT_BOXES: dict[str, Box] = {
    "hair": (0.0, 0.15, 0.18, 0.85),
    "brows": (0.26, 0.2, 0.34, 0.8),
    "eyes": (0.34, 0.2, 0.45, 0.8),
    "nose": (0.45, 0.4, 0.62, 0.6),
    "mouth": (0.66, 0.3, 0.8, 0.7),
}
DERIVED = ("skin", "background")


def _check_box(box: Box) -> Box:
    top, left, bottom, right = box
    if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
        raise ValueError(f"{list(box)} is not (top, left, bottom, right) with 0 <= top < bottom <= 1 "
                         "and 0 <= left < right <= 1")
    return box


class FaceBoxesOptions(Options):
    boxes: dict[str, Box] = Field(default_factory=dict, description="boxes that replace or add to the defaults")
    face: Box = Field((0.12, 0.12, 0.92, 0.88), description="skin is this box less the parts; background, the rest")

    @field_validator("boxes")
    @classmethod
    def _known_regions(cls, boxes: dict[str, Box]) -> dict[str, Box]:
        for name, box in boxes.items():
            if name not in FACE_REGIONS or name in DERIVED:
                raise ValueError(f"no box for {name!r}: boxes are for {[r for r in FACE_REGIONS if r not in DERIVED]}")
            _check_box(box)
        return boxes

    @field_validator("face")
    @classmethod
    def _face_box(cls, box: Box) -> Box:
        return _check_box(box)


def box_mask(box: Box, height: int, width: int) -> np.ndarray:
    """A boolean (height, width) mask of one box."""
    top, left, bottom, right = box
    rows = slice(round(top * height), round(bottom * height))
    cols = slice(round(left * width), round(right * width))
    mask = np.zeros((height, width), bool)
    mask[rows, cols] = True
    return mask


class FaceBoxes(RegionSource):
    def __init__(self, boxes: dict[str, Box], face: Box):
        self.boxes = boxes
        self.face = face
        self._masks: dict[tuple[int, int], dict[str, np.ndarray]] = {}  # by image size

    def masks(self, height: int, width: int) -> dict[str, np.ndarray]:
        """Every region's mask for images of one size (computed once per size)."""
        if (height, width) not in self._masks:
            masks = {name: box_mask(box, height, width) for name, box in self.boxes.items()}
            face = box_mask(self.face, height, width)
            parts = np.logical_or.reduce(list(masks.values())) if masks else np.zeros_like(face)
            masks["skin"] = face & ~parts
            masks["background"] = ~face & ~parts
            self._masks[(height, width)] = masks
        return self._masks[(height, width)]

    def regions(self, images: np.ndarray) -> list[dict[str, np.ndarray]]:
        height, width = images.shape[-2:]
        # the same geometry for every image: one dict of fresh copies per image
        return [{name: mask.copy() for name, mask in self.masks(height, width).items()} for _ in images]

    def fingerprint(self) -> str:
        # no model behind these regions: the geometry is all that decides them
        geometry = {"boxes": self.boxes, "face": self.face}
        return hashlib.sha256(json.dumps(geometry, sort_keys=True).encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"source": "fixed boxes", "regions": sorted(self.boxes) + list(DERIVED)}


class FaceBoxesPlugin(RegionSourcePlugin):
    name = "face-boxes"
    description = "Fixed face-part boxes (eyes, brows, nose, mouth, hair, skin, background) for aligned faces."
    Options = FaceBoxesOptions

    def load(self, context: LoadContext) -> RegionSource:
        opts: FaceBoxesOptions = self.options
        return FaceBoxes({**DEFAULT_BOXES, **opts.boxes}, opts.face)


@hookimpl
def register_region_sources() -> list[type[RegionSourcePlugin]]:
    return [FaceBoxesPlugin]
