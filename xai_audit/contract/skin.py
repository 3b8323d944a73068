"""A skin-tone estimate from pixels: the individual typology angle (ITA).

ITA = atan((L* - 50) / b*) in degrees, from the median CIELAB L* and b* of
skin pixels (Chardon et al., 1991; used for skin-tone audits by e.g. Kinyanjui
et al., 2020). It is an *estimate* from image colour, sensitive to lighting
and white balance, never a person's self-reported skin type; whoever shows it
must say so.

Skin pixels come from the sample's ``skin`` region mask when there is one,
else from a central ellipse filtered by a YCbCr skin-colour rule. Used by the
group-accuracy hypothesis (ITA categories) and the error-slices discoverer
(the angle as an image property); open to third-party plugins.
"""

from __future__ import annotations

import numpy as np

from xai_audit.contract.types import Sample

#: fewest skin pixels an estimate is made from
MIN_SKIN_PIXELS = 10


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB in [0, 1] -> (..., 3) CIELAB (D65)."""
    rgb = np.clip(np.asarray(rgb, np.float64), 0, 1)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])
    xyz = linear @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def skin_pixels(sample: Sample) -> tuple[np.ndarray, str]:
    """(P, 3) RGB skin pixels and where they came from ("skin mask" or "colour rule")."""
    image = np.asarray(sample.image, np.float32)
    if sample.regions and "skin" in sample.regions:
        mask = np.asarray(sample.regions["skin"], bool)
        return image[:, mask].T, "skin mask"
    h, w = image.shape[-2:]
    yy, xx = np.mgrid[0:h, 0:w]
    ellipse = ((yy - 0.55 * h) / (0.3 * h)) ** 2 + ((xx - 0.5 * w) / (0.22 * w)) ** 2 <= 1
    r, g, b = (image[c] * 255 for c in range(3))
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    rule = (cb >= 77) & (cb <= 127) & (cr >= 133) & (cr <= 173)
    return image[:, ellipse & rule].T, "colour rule"


def skin_tone_angle(sample: Sample) -> tuple[float | None, str]:
    """The sample's ITA in degrees (None when too few skin pixels), and the pixel source."""
    pixels, source = skin_pixels(sample)
    if len(pixels) < MIN_SKIN_PIXELS:
        return None, source
    lab = srgb_to_lab(pixels)
    lightness, b = float(np.median(lab[:, 0])), float(np.median(lab[:, 2]))
    return float(np.degrees(np.arctan2(lightness - 50.0, b))), source
