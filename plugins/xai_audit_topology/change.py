"""What the collapse changed: the pixel difference by region and by colour, in numbers and words.

All images are display-space RGB in [0, 1]; changes are given in 8-bit
levels (1/255). The size of a pixel's change is
|ΔR| + |ΔG| + |ΔB|. A region's (or a hue's) *share of the change* divided by
its *share of the area* is its enrichment: 1 means the change fell there no
more than on any other pixel; 3 means three times as densely. A channel's
*consistency* is its mean signed change over its mean absolute change: +1
when every changed pixel moved up, −1 when every one moved down, near 0 when
the changes go both ways.

For a model that takes one channel (a grayscale model: the display image's
luminance), a change lives in that channel: the size of a pixel's change is
|Δluminance|, and colour, hue and the colour share of the change are not
applicable (the model cannot see them), which the summary says instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114])
#: hue bands (degrees, upper bounds) for pixels with saturation >= _COLOURED
HUES = (("red", 20), ("orange/yellow", 70), ("green", 160), ("cyan", 200), ("blue", 260), ("magenta", 330), ("red", 360))
_COLOURED = 0.2
#: enrichment above which a region or hue is named as where the change concentrates
ENRICHED = 1.25
#: changes are reported in 8-bit levels (1/255 of the [0, 1] range)
LEVELS = 255.0
#: |consistency| above which a channel is said to move one way
CONSISTENT = 0.2
#: a region or hue must take at least this share of the change to be named
MIN_SHARE = 0.02
#: share of the change's energy off the grey axis if the three channels moved independently
INDEPENDENT_CHROMA = 2.0 / 3.0


@dataclass
class ChangeSummary:
    regions: list[dict] = field(default_factory=list)
    colours: list[dict] = field(default_factory=list)
    hues: list[dict] = field(default_factory=list)
    words: str = ""
    #: plain numbers the suggestions read
    enriched_regions: list[str] = field(default_factory=list)
    luminance_consistency: float = 0.0
    saturation_consistency: float = 0.0
    chroma_share: float = 0.0
    #: the model takes one channel: colour is not applicable
    one_channel: bool = False


def _levels(value: float) -> float:
    """A change in [0, 1] units as 8-bit levels, to two decimals."""
    return round(LEVELS * float(value), 2)


def hsv(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees, saturation and value of (N, 3, H, W) RGB images."""
    r, g, b = images[:, 0], images[:, 1], images[:, 2]
    v = images.max(axis=1)
    c = v - images.min(axis=1)
    s = np.where(v > 0, c / np.maximum(v, 1e-12), 0.0)
    safe = np.maximum(c, 1e-12)
    h = np.where(v == r, ((g - b) / safe) % 6, np.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4))
    return np.where(c > 0, h * 60.0, 0.0), s, v


def _hue_band(hue: np.ndarray, sat: np.ndarray) -> np.ndarray:
    band = np.full(hue.shape, "grey", dtype=object)
    lower = 0
    for name, upper in HUES:
        band[(sat >= _COLOURED) & (hue >= lower) & (hue < upper)] = name
        lower = upper
    return band


def summarise(
    before: np.ndarray, after: np.ndarray, regions: Sequence[Mapping[str, np.ndarray] | None], *,
    one_channel: bool = False,
) -> ChangeSummary:
    """Region, colour and hue tables and a sentence for the change ``after - before`` (N, 3, H, W).

    ``one_channel``: the model sees only the luminance; colour and hue are then not applicable."""
    before = np.asarray(before, dtype=np.float64)
    after = np.asarray(after, dtype=np.float64)
    delta = after - before
    size = change_size(delta, one_channel)  # (N, H, W)
    total = float(size.sum())
    out = ChangeSummary(one_channel=one_channel)
    if total <= 0:
        out.words = "The collapse steps left the pixels unchanged."
        return out
    out.regions = _regions(delta, size, total, regions)
    if one_channel:
        luminance = np.tensordot(LUMA, delta, axes=([0], [1]))[size > 1e-6]
        mean_abs = float(np.abs(luminance).mean()) if luminance.size else 0.0
        mean = float(luminance.mean()) if luminance.size else 0.0
        out.colours = [{"channel": "luminance", "mean change": _levels(mean), "mean |change|": _levels(mean_abs),
                        "consistency": round(mean / mean_abs, 3) if mean_abs > 0 else 0.0}]
        out.enriched_regions = [r["region"] for r in out.regions
                                if r["enrichment"] >= ENRICHED and r["change share"] >= MIN_SHARE]
        out.luminance_consistency = out.colours[0]["consistency"]
        out.words = _words(out)
        return out
    out.colours, chroma = _colours(before, after, delta, size)
    out.hues = _hues(before, after, size, total)
    out.enriched_regions = [r["region"] for r in out.regions if r["enrichment"] >= ENRICHED and r["change share"] >= MIN_SHARE]
    by_name = {row["channel"]: row for row in out.colours}
    out.luminance_consistency = by_name["luminance"]["consistency"]
    out.saturation_consistency = by_name["saturation"]["consistency"]
    out.chroma_share = chroma
    out.words = _words(out)
    return out


def change_size(delta: np.ndarray, one_channel: bool = False) -> np.ndarray:
    """Each pixel's change (N, H, W): |ΔR| + |ΔG| + |ΔB|, or |Δluminance| for a one-channel model."""
    if one_channel:
        return np.abs(np.tensordot(LUMA, delta, axes=([0], [1])))
    return np.abs(delta).sum(axis=1)


def _regions(delta, size, total, regions) -> list[dict]:
    names: list[str] = []
    for masks in regions:
        for name in masks or {}:
            if name not in names:
                names.append(name)
    rows = []
    pixels = size.shape[0] * size.shape[1] * size.shape[2]
    for name in names:
        mask = np.stack([
            np.asarray((masks or {}).get(name, np.zeros(size.shape[1:], bool)), dtype=bool) for masks in regions
        ])
        area = mask.sum() / pixels
        if area == 0:
            continue
        share = float(size[mask].sum() / total)
        d = delta.transpose(1, 0, 2, 3)[:, mask]  # (3, pixels in region)
        rows.append({
            "region": name,
            "area share": round(float(area), 4),
            "change share": round(share, 4),
            "enrichment": round(share / float(area), 2),
            "ΔR": _levels(d[0].mean()),
            "ΔG": _levels(d[1].mean()),
            "ΔB": _levels(d[2].mean()),
            "Δluminance": _levels((LUMA[:, None] * d).sum(axis=0).mean()),
        })
    rows.sort(key=lambda r: -r["enrichment"])
    return rows


def _colours(before, after, delta, size) -> tuple[list[dict], float]:
    _, s0, v0 = hsv(before)
    _, s1, v1 = hsv(after)
    changed = size > 1e-6
    series = {
        "red (R)": delta[:, 0], "green (G)": delta[:, 1], "blue (B)": delta[:, 2],
        "luminance": np.tensordot(LUMA, delta, axes=([0], [1])),
        "saturation": s1 - s0, "value (brightness)": v1 - v0,
    }
    rows = []
    for name, d in series.items():
        d = d[changed]
        mean_abs = float(np.abs(d).mean()) if d.size else 0.0
        mean = float(d.mean()) if d.size else 0.0
        rows.append({"channel": name, "mean change": _levels(mean), "mean |change|": _levels(mean_abs),
                     "consistency": round(mean / mean_abs, 3) if mean_abs > 0 else 0.0})
    # the share of the change's energy off the grey axis (colour, not brightness): 2/3 for independent channels
    grey = delta.mean(axis=1, keepdims=True)
    chroma = float(((delta - grey) ** 2).sum() / max((delta**2).sum(), 1e-12))
    return rows, chroma


def _hues(before, after, size, total) -> list[dict]:
    h0, s0, _ = hsv(before)
    _, s1, v1 = hsv(after)
    _, _, v0 = hsv(before)
    band = _hue_band(h0, s0)
    rows = []
    for name in dict.fromkeys([n for n, _ in HUES] + ["grey"]):
        mask = band == name
        area = float(mask.mean())
        if area == 0:
            continue
        share = float(size[mask].sum() / total)
        rows.append({
            "hue of the pixel": name, "area share": round(area, 4), "change share": round(share, 4),
            "enrichment": round(share / area, 2),
            "Δsaturation": _levels((s1 - s0)[mask].mean()), "Δbrightness": _levels((v1 - v0)[mask].mean()),
        })
    rows.sort(key=lambda r: -r["enrichment"])
    return rows


def _direction(row: dict, up: str, down: str) -> str | None:
    if row["consistency"] >= CONSISTENT:
        return up
    if row["consistency"] <= -CONSISTENT:
        return down
    return None


def _words(s: ChangeSummary) -> str:
    parts = []
    named = [r for r in s.regions if r["region"] in s.enriched_regions][:4]
    if named:
        where = ", ".join(
            f"{r['region']} ({100 * r['change share']:.0f} % of the change on {100 * r['area share']:.0f} % of the area)"
            for r in named
        )
        parts.append(f"The change concentrates on the {where}.")
    elif s.regions:
        parts.append(f"The change is spread over the image: no region takes more than {ENRICHED}× its share of the area.")
    by = {r["channel"]: r for r in s.colours}
    if s.one_channel:
        lum = _direction(by["luminance"], "brightened", "darkened")
        if lum:
            parts.append(f"It {lum} the images (luminance {by['luminance']['mean change']:+.2f} levels).")
        else:
            parts.append("The brightness did not move one way (the changes go both ways).")
        parts.append("Colour: not applicable: the model takes one channel (the image's luminance), so the change "
                     "was made in that channel and has no colour.")
        return " ".join(parts)
    moves = []
    for channel, label in (("red (R)", "red"), ("green (G)", "green"), ("blue (B)", "blue")):
        direction = _direction(by[channel], "added", "removed")
        if direction:
            change = by[channel]["mean change"]
            moves.append((abs(change), f"{direction} {label} (mean {change:+.2f} levels)"))
    if moves:
        parts.append("Over the changed pixels it " + ", ".join(m for _, m in sorted(moves, reverse=True)) + ".")
    lum = _direction(by["luminance"], "brightened", "darkened")
    sat = _direction(by["saturation"], "saturated", "desaturated")
    tone = [t for t in (lum, sat) if t]
    if tone:
        parts.append(f"It {' and '.join(tone)} the images (luminance {by['luminance']['mean change']:+.2f}, "
                     f"saturation {by['saturation']['mean change']:+.2f} levels).")
    hues = [h for h in s.hues if h["enrichment"] >= ENRICHED and h["hue of the pixel"] != "grey" and h["change share"] >= MIN_SHARE]
    if hues:
        parts.append("By hue, it fell most on " + ", ".join(
            f"{h['hue of the pixel']} pixels ({h['enrichment']:.1f}× their area share)" for h in hues[:3]
        ) + ".")
    if not moves and not tone:
        parts.append("No colour channel, brightness or saturation moved one way (the changes go both ways).")
    parts.append(
        f"{100 * s.chroma_share:.0f} % of the change's energy is colour rather than brightness "
        f"({100 * INDEPENDENT_CHROMA:.0f} % if the channels had moved independently)."
    )
    return " ".join(parts)
