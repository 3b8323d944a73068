"""A skin-tone estimate from pixels: the individual typology angle (ITA).

ITA = atan((L* - 50) / b*) in degrees, from the median CIELAB L* and b* of
skin pixels (Chardon et al., 1991; used for skin-tone audits by e.g. Kinyanjui
et al., 2020). It is an *estimate* from image colour, sensitive to lighting
and white balance, never a person's self-reported skin type, and the report
says so wherever it is used.

Skin pixels come from the sample's ``skin`` region mask when there is one,
else from a central ellipse filtered by a YCbCr skin-colour rule
(``xai_audit.api.skin_tone_angle``); this module turns the angle into categories.
"""

from __future__ import annotations

import numpy as np

from xai_audit.api import skin_tone_angle

#: the estimate's group column name
COLUMN = "skin tone (ITA estimate)"
#: ITA categories, lightest first: (lower bound in degrees, name)
CATEGORIES = ((55.0, "very light"), (41.0, "light"), (28.0, "intermediate"), (10.0, "tan"), (-30.0, "brown"),
              (-np.inf, "dark"))


#: the estimate itself lives in the public API (the error-slices discoverer reads it too)
ita = skin_tone_angle


def category(angle: float | None) -> str:
    if angle is None:
        return "unknown"
    for bound, name in CATEGORIES:
        if angle > bound:
            return name
    return CATEGORIES[-1][1]


def estimate(samples) -> tuple[list[str], dict[str, int]]:
    """An ITA category per sample, and how many samples' pixels came from each source."""
    out, sources = [], {}
    for s in samples:
        angle, source = ita(s)
        out.append(category(angle))
        sources[source] = sources.get(source, 0) + 1
    return out, sources
