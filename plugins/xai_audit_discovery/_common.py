"""What both discoverers share: image properties, the interventions their candidates name, words for places.

Every intervention is plain data (a JSON-able ``spec``) and one function here turns it into the transform
the host applies to the held-back images: ``(images (N, 3, H, W) in [0, 1], samples) -> images``. Each works
image by image, so an image's result does not depend on which others share its chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from xai_audit.api import Sample, sample_chunks, srgb_to_lab

LUMA = np.array([0.299, 0.587, 0.114], np.float32).reshape(1, 3, 1, 1)

#: the properties property-slices tries, in the order ties are broken (the simpler explanation first);
#: "border_colour" is the border's mean RGB projected on the direction that best tells one class from the others
TRIED = ("brightness", "border_colour", "saturation", "colourfulness", "contrast", "sharpness")
#: what :func:`properties` computes for each image (the border's three channels stand for "border_colour")
PROPERTIES = ("brightness", "border_r", "border_g", "border_b", "saturation", "colourfulness", "contrast",
              "sharpness")
#: what each property is, for evidence and descriptions
MEANING = {
    "brightness": "mean luminance (0.299 R + 0.587 G + 0.114 B)",
    "contrast": "standard deviation of the luminance",
    "saturation": "mean chroma (max - min of the RGB channels)",
    "colourfulness": "Hasler & Suesstrunk colourfulness of the RGB image",
    "sharpness": "mean |Laplacian| of the luminance",
    "border_colour": ("mean RGB of the border ring (a proxy for the background), projected on Fisher's "
                      "discriminant direction between the class and the others (three weights fitted on the same "
                      "images: the AUC is a little optimistic; the held-back check is the test)"),
    "hue": "hue angle in degrees of the image's mean colour in CIELAB (0 red, 90 yellow, 180 green, 270 blue)",
    "border_r": "mean red of the border ring",
    "border_g": "mean green of the border ring",
    "border_b": "mean blue of the border ring",
}
#: bisection steps when an intervention matches a property to its target, and the factors it searches
#: a scalar property's (lower, higher) in words, and the kind of cue it is
WORDS = {
    "brightness": ("darker", "brighter"),
    "contrast": ("lower in contrast", "higher in contrast"),
    "saturation": ("less saturated", "more saturated"),
    "colourfulness": ("less colourful", "more colourful"),
    "sharpness": ("blurrier", "sharper"),
}
CUE = {"brightness": "property", "contrast": "property", "sharpness": "property", "saturation": "colour",
        "colourfulness": "colour"}

_STEPS = 24
_FACTOR_MAX = 8.0


def border_width(height: int, width: int) -> int:
    """Width in pixels of the border ring whose colour stands for the background."""
    return max(1, round(0.06 * min(height, width)))


def border_ring(height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask of the border ring."""
    w = border_width(height, width)
    ring = np.ones((height, width), bool)
    ring[w:height - w, w:width - w] = False
    return ring


def luminance(images: np.ndarray) -> np.ndarray:
    return (images * LUMA).sum(axis=1)


def _laplacian(lum: np.ndarray) -> np.ndarray:
    """The 4-neighbour Laplacian of (N, H, W) luminance, interior pixels only."""
    if lum.shape[1] < 3 or lum.shape[2] < 3:
        return np.zeros((lum.shape[0], 0, 0), lum.dtype)
    return (lum[:, :-2, 1:-1] + lum[:, 2:, 1:-1] + lum[:, 1:-1, :-2] + lum[:, 1:-1, 2:]
            - 4.0 * lum[:, 1:-1, 1:-1])


def property_values(images: np.ndarray, name: str) -> np.ndarray:
    """One property (see :data:`MEANING`) of each image of (N, 3, H, W): (N,) float64."""
    images = np.asarray(images, np.float32)
    n = len(images)
    if name == "brightness":
        return luminance(images).reshape(n, -1).mean(axis=1).astype(np.float64)
    if name == "contrast":
        return luminance(images).reshape(n, -1).std(axis=1).astype(np.float64)
    if name == "saturation":
        return (images.max(axis=1) - images.min(axis=1)).reshape(n, -1).mean(axis=1).astype(np.float64)
    if name == "colourfulness":
        r, g, b = images[:, 0].reshape(n, -1), images[:, 1].reshape(n, -1), images[:, 2].reshape(n, -1)
        rg, yb = r - g, 0.5 * (r + g) - b
        spread = np.sqrt(rg.std(axis=1) ** 2 + yb.std(axis=1) ** 2)
        centre = np.sqrt(rg.mean(axis=1) ** 2 + yb.mean(axis=1) ** 2)
        return (spread + 0.3 * centre).astype(np.float64)
    if name == "sharpness":
        lap = _laplacian(luminance(images))
        return np.abs(lap).reshape(n, -1).mean(axis=1).astype(np.float64) if lap.size else np.zeros(n)
    if name == "hue":  # the hue angle of the image's mean colour in CIELAB: 0 red, 90 yellow, 180 green, 270 blue
        lab = srgb_to_lab(images.reshape(n, 3, -1).mean(axis=2))
        return (np.degrees(np.arctan2(lab[:, 2], lab[:, 1])) % 360.0).astype(np.float64)
    if name in ("border_r", "border_g", "border_b"):
        ring = border_ring(*images.shape[2:])
        return images[:, "rgb".index(name[-1])][:, ring].mean(axis=1).astype(np.float64)
    raise ValueError(f"unknown image property {name!r}")


def properties(samples: Sequence[Sample], chunk: int = 256) -> dict[str, np.ndarray]:
    """Every property of :data:`PROPERTIES` for every sample, read chunk by chunk."""
    out = {name: np.zeros(len(samples)) for name in PROPERTIES}
    for rows, images in sample_chunks(samples, chunk):
        for name in PROPERTIES:
            out[name][rows] = property_values(images, name)
    return out


# --------------------------------------------------------------------------- interventions


def _scaled(images: np.ndarray, op: str, factor: np.ndarray) -> np.ndarray:
    """``images`` with ``op`` applied at a per-image ``factor`` (N,): 1 leaves an image as it is."""
    f = factor.reshape(-1, 1, 1, 1).astype(np.float32)
    if op == "brightness":
        out = images * f
    elif op == "contrast":
        mean = luminance(images).reshape(len(images), -1).mean(axis=1).reshape(-1, 1, 1, 1)
        out = mean + f * (images - mean)
    elif op in ("saturation", "colourfulness"):
        grey = luminance(images)[:, None]
        out = grey + f * (images - grey)
    elif op == "sharpness":
        blurred = _blurred(images)
        out = blurred + f * (images - blurred)
    else:
        raise ValueError(f"unknown op {op!r}")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def scale_property(images: np.ndarray, op: str, factor: float) -> np.ndarray:
    """Every image changed by ``op`` at one ``factor`` (see :func:`match_property` for what each op does;
    1 leaves an image as it is), clipped to [0, 1]."""
    images = np.asarray(images, np.float32)
    return _scaled(images, op, np.full(len(images), float(factor)))


def _blurred(images: np.ndarray) -> np.ndarray:
    """A 3x3 binomial blur of each channel, edges repeated."""
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    rows = 0.25 * padded[:, :, :-2] + 0.5 * padded[:, :, 1:-1] + 0.25 * padded[:, :, 2:]
    return (0.25 * rows[:, :, :, :-2] + 0.5 * rows[:, :, :, 1:-1] + 0.25 * rows[:, :, :, 2:]).astype(np.float32)


def match_property(images: np.ndarray, op: str, target: float) -> np.ndarray:
    """Each image changed by ``op`` (brightness: scaled; contrast: stretched about its mean luminance;
    saturation, colourfulness: chroma scaled about each pixel's grey; sharpness: blended with a blurred
    copy) by the factor in [0, 8] that brings its property closest to ``target``, found by bisection (the
    property grows with the factor; clipping to [0, 1] included)."""
    images = np.asarray(images, np.float32)
    n = len(images)
    if n == 0:
        return images.copy()
    lo, hi = np.zeros(n), np.full(n, _FACTOR_MAX)
    for _ in range(_STEPS):
        mid = 0.5 * (lo + hi)
        low = property_values(_scaled(images, op, mid), op) < target
        lo, hi = np.where(low, mid, lo), np.where(low, hi, mid)
    return _scaled(images, op, 0.5 * (lo + hi))


def shift_background(images: np.ndarray, samples: Sequence[Sample], colour: Sequence[float],
                     use_mask: bool) -> np.ndarray:
    """The background of each image shifted by one colour so that the border ring's mean becomes ``colour``:
    with ``use_mask`` and a sample's ``background`` region, that region moves, by what takes the part of the
    ring it covers to ``colour`` (hair reaching the border stays as it is); else the border ring itself."""
    images = np.asarray(images, np.float32).copy()
    height, width = images.shape[2:]
    ring = border_ring(height, width)
    target = np.asarray(colour, np.float32)
    for k, image in enumerate(images):
        regions = samples[k].regions if k < len(samples) else None
        mask = None
        if use_mask and regions and "background" in regions:
            mask = np.asarray(regions["background"], bool)
            if mask.shape != (height, width) or not mask.any():
                mask = None
        if mask is not None and not (mask & ring).any():
            mask = None
        read = ring if mask is None else mask & ring
        mask = ring if mask is None else mask
        delta = target - image[:, read].mean(axis=1)
        image[:, mask] += delta[:, None]
    return np.clip(images, 0.0, 1.0)


def fill_box(images: np.ndarray, box: Sequence[int], size: Sequence[int], fill: Sequence[float]) -> np.ndarray:
    """``box`` ``[y0, x0, y1, x1)`` (pixels of an image of ``size`` (H, W), scaled to the images' own size)
    painted in ``fill``."""
    images = np.asarray(images, np.float32).copy()
    height, width = images.shape[2:]
    sy, sx = height / float(size[0]), width / float(size[1])
    y0, x0 = int(np.floor(box[0] * sy)), int(np.floor(box[1] * sx))
    y1, x1 = int(np.ceil(box[2] * sy)), int(np.ceil(box[3] * sx))
    images[:, :, y0:y1, x0:x1] = np.asarray(fill, np.float32).reshape(1, 3, 1, 1)
    return images


def transform_for(spec: Mapping[str, Any]) -> Callable[[np.ndarray, Sequence[Sample]], np.ndarray]:
    """The transform an intervention spec stands for (see the module docstring)."""
    op = spec.get("op")
    if op == "fill-box":
        box, size, fill = list(spec["box"]), list(spec["size"]), list(spec["fill"])
        return lambda images, samples: fill_box(images, box, size, fill)
    if op in ("brightness", "contrast", "saturation", "colourfulness", "sharpness"):
        target = float(spec["target"])
        return lambda images, samples: match_property(images, op, target)
    if op == "border-colour":
        colour, use_mask = list(spec["colour"]), bool(spec.get("background_mask", True))
        return lambda images, samples: shift_background(images, samples, colour, use_mask)
    if op == "none":
        return lambda images, samples: np.asarray(images, np.float32).copy()
    raise ValueError(f"unknown intervention op {op!r}; known: fill-box, brightness, contrast, saturation, "
                     "colourfulness, sharpness, border-colour, none")


# --------------------------------------------------------------------------- words


def place_words(box: Sequence[int], height: int, width: int) -> str:
    """Where a box ``[y0, x0, y1, x1)`` sits, in words: "the top-left corner", "the centre", ..."""
    cy, cx = 0.5 * (box[0] + box[2]) / height, 0.5 * (box[1] + box[3]) / width
    v = 0 if cy < 1 / 3 else (2 if cy > 2 / 3 else 1)
    h = 0 if cx < 1 / 3 else (2 if cx > 2 / 3 else 1)
    return {
        (0, 0): "the top-left corner", (0, 1): "the top centre", (0, 2): "the top-right corner",
        (1, 0): "the left side", (1, 1): "the centre", (1, 2): "the right side",
        (2, 0): "the bottom-left corner", (2, 1): "the bottom centre", (2, 2): "the bottom-right corner",
    }[(v, h)]


def slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def unique_name(name: str, taken: set[str]) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name}-{k}", k + 1
    taken.add(out)
    return out


def seeded_subset(n: int, cap: int, seed: int, salt: int) -> np.ndarray:
    """Indices of at most ``cap`` of ``n`` items, seeded, in index order."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, salt]).choice(n, size=cap, replace=False))
