"""synthetic-faces: a procedurally drawn, seeded face data set with planted effects.

Seven expressions told apart by mouth, brow and eye shape, six Fitzpatrick-style
skin tones as a group attribute, exact region masks, and two effects an audit
should find, planted in the train split only:

* a shortcut: most "sad" images (and a few others) are darkened;
* an imbalance: one skin tone is rare.

The test split is always balanced and clean of those two. Two more cues, off by
default, can be planted in every split (an audited test split then carries them,
as a real watermark would), for discovery to find unnamed:

* ``stamp_class``: a small bright square mark at the top-left corner on most
  images of that class (a "copyright watermark", region ``stamp``);
* ``tint_class``: the background of most images of that class is tinted green.

``masked: true`` draws a pleated surgical face mask over every face's lower
half (below the middle of the nose), as worn, for a masked-faces data set
to audit with ``dataset-shift``; the pixels it covers belong to no region.

Pure numpy; sample ``i`` is drawn
from its own generator seeded with ``(seed, split, i)``, so it is the same
whichever order samples are read in, one at a time or in bulk.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from xai_audit.api import FACE_REGIONS, Dataset, DatasetPlugin, LoadContext, Options, Sample, SampleInfo

#: Bump whenever the drawing or the sampling changes: it is part of the fingerprint.
GENERATOR_VERSION = "synthetic-faces/2"

CLASSES = ["happy", "sad", "neutral", "angry", "disgust", "fear", "surprise"]
TONES = ["I", "II", "III", "IV", "V", "VI"]
REGIONS = list(FACE_REGIONS)
SPLIT_CODES = {"train": 1, "test": 2}

# Fitzpatrick-style skin colours, light to dark. V and VI are drawn a little lighter than a
# photograph's darkest skin so the expression strokes keep their contrast: with the shortcuts
# off, a model is then as accurate on VI as on I (generator 1 left VI ~3 points behind).
SKIN_RGB = np.array(
    [
        (0.96, 0.85, 0.77),
        (0.92, 0.76, 0.64),
        (0.83, 0.64, 0.49),
        (0.68, 0.49, 0.34),
        (0.55, 0.38, 0.26),
        (0.42, 0.28, 0.19),
    ]
)
# black, dark brown, brown, auburn, blonde, grey
HAIR_RGB = np.array(
    [
        (0.07, 0.06, 0.05),
        (0.22, 0.14, 0.08),
        (0.42, 0.28, 0.15),
        (0.55, 0.24, 0.10),
        (0.84, 0.71, 0.42),
        (0.66, 0.65, 0.63),
    ]
)
# Hair colour frequencies by tone (light tones: more blonde; dark tones: mostly black).
_HAIR_P = np.array(
    [
        [0.10, 0.25, 0.25, 0.12, 0.20, 0.08],
        [0.12, 0.27, 0.25, 0.10, 0.18, 0.08],
        [0.28, 0.35, 0.20, 0.05, 0.05, 0.07],
        [0.35, 0.35, 0.18, 0.03, 0.03, 0.06],
        [0.62, 0.28, 0.04, 0.00, 0.00, 0.06],
        [0.66, 0.26, 0.02, 0.00, 0.00, 0.06],
    ]
)
_HAIR_CUM = np.cumsum(_HAIR_P, axis=1)
# The optional planted cues (off by default): the stamp's colour, and the background tint (a blend toward a
# saturated green no untinted background reaches) with its weight.
STAMP_RGB = (0.97, 0.97, 0.95)
#: the stamp's side as a share of the image's (option ``stamp_side``)
STAMP_SIDE = 0.09
TINT_RGB = (0.15, 0.72, 0.32)
FACE_MASK_RGB = (0.62, 0.78, 0.9)
TINT_WEIGHT = 0.75

# Expression parameters (face units: the face is about 0.66 wide, 0.84 tall).
#   eye_ry  eye half-height          brow_v  brow height (negative is up)
#   slant   inner brow end raised by arch    brow ends lowered by
#   brow_t  brow half-thickness      m_*     mouth: half-width w, curvature a
#   (corners raised when negative), tilt b, wave s, opening up hu / down hl,
#   profile p (1 parabola, 0.5 ellipse), half-thickness t
_NEUTRAL = dict(
    eye_ry=0.032, brow_v=-0.13, slant=0.0, arch=0.008, brow_t=0.017,
    m_w=0.11, m_a=0.0, m_b=0.0, m_s=0.0, m_hu=0.0, m_hl=0.0, m_t=0.016,
)
_EXPR = {
    "happy": dict(_NEUTRAL, eye_ry=0.025, brow_v=-0.135, arch=0.018, m_w=0.14, m_a=-0.065),
    "sad": dict(_NEUTRAL, eye_ry=0.027, brow_v=-0.135, slant=0.05, arch=0.0, m_w=0.11, m_a=0.06),
    "neutral": dict(_NEUTRAL),
    "angry": dict(
        _NEUTRAL, eye_ry=0.024, brow_v=-0.11, slant=-0.05, arch=0.0, brow_t=0.022,
        m_w=0.085, m_a=0.008, m_t=0.013,
    ),
    "disgust": dict(
        _NEUTRAL, eye_ry=0.015, brow_v=-0.135, arch=0.0, m_w=0.115, m_a=0.012, m_b=0.035,
        m_s=0.022,
    ),
    "fear": dict(
        _NEUTRAL, eye_ry=0.05, brow_v=-0.17, slant=0.045, arch=0.0,
        m_w=0.1, m_hu=0.03, m_hl=0.036, m_t=0.008,
    ),
    "surprise": dict(
        _NEUTRAL, eye_ry=0.056, brow_v=-0.205, arch=0.03, m_w=0.068, m_hu=0.07, m_hl=0.075,
        m_t=0.010,
    ),
}
_MOUTH_P = {"fear": 0.5, "surprise": 0.5}

# The per-sample parameter vector, in this order (see _draw).
_PARAMS = (
    "label tone dark "
    "cx cy scale rot_c rot_s "
    "face_rx face_ry ear "
    "hair_rx hair_ry hair_wave hair_freq hair_phase top_cut side_w side_bottom bun_r hl0 hl2 "
    "eye_x eye_y eye_rx eye_ry pupil_r gaze "
    "brow_v_l brow_v_r slant_l slant_r arch brow_w brow_t "
    "nose_v nose_rx nose_ry "
    "m_v m_w m_a m_b m_s m_hu m_hl m_p m_t teeth "
    "skin_r skin_g skin_b hair_r hair_g hair_b brow_r brow_g brow_b iris_r iris_g iris_b "
    "bg_r bg_g bg_b bg_grad hair_tex light tint_r tint_g tint_b noise stamp bg_tint"
).split()
_P = {name: k for k, name in enumerate(_PARAMS)}


class SyntheticFacesOptions(Options):
    """Options of the ``synthetic-faces`` data set."""

    split: Literal["train", "test"] = "test"
    n: int = Field(700, ge=1, le=10_000_000, description="number of samples (at most ten million)")
    size: int = Field(64, ge=16, le=512, description="square side in pixels")
    seed: int = Field(0, ge=0)
    dark_sad: float = Field(
        0.8, ge=0.0, le=1.0, description="train split: fraction of 'sad' images darkened"
    )
    dark_other: float = Field(
        0.05, ge=0.0, le=1.0, description="train split: fraction of other images darkened"
    )
    rare_tone: str | None = Field("VI", description="train split: this skin tone is rare")
    rare_fraction: float = Field(0.01, ge=0.0, le=1.0, description="train split: share of the rare skin tone")
    stamp_class: str | None = Field(
        None, description="every split: this class's images carry a bright square mark at the top-left corner"
    )
    stamp_fraction: float = Field(0.9, ge=0.0, le=1.0, description="share of stamp_class's images stamped")
    stamp_side: float = Field(STAMP_SIDE, ge=0.05, le=0.2, description="the stamp's side, as a share of the image's")
    tint_class: str | None = Field(None, description="every split: this class's images have a green-tinted background")
    tint_fraction: float = Field(0.9, ge=0.0, le=1.0, description="share of tint_class's images tinted")
    masked: bool = Field(False, description="every face wears a surgical mask over its lower half (a masked-faces set)")

    @field_validator("stamp_class", "tint_class")
    @classmethod
    def _known_class(cls, value: str | None) -> str | None:
        if value is not None and value not in CLASSES:
            raise ValueError(f"must be one of {', '.join(CLASSES)} or null")
        return value

    @field_validator("rare_tone")
    @classmethod
    def _known_tone(cls, value: str | None) -> str | None:
        if value is not None and value not in TONES:
            raise ValueError(f"rare_tone must be one of {', '.join(TONES)} or null")
        return value


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def _draw(opts: SyntheticFacesOptions, index: int, noise: bool = True) -> tuple[list[float], np.ndarray | None]:
    """The parameter vector and the pixel noise of sample ``index`` (None when ``noise`` is False: the
    parameters are drawn first, so they are the same either way)."""
    rng = np.random.default_rng([opts.seed, SPLIT_CODES[opts.split], index])
    u = rng.random(64).tolist()
    pixels = rng.standard_normal((3, opts.size, opts.size), dtype=np.float32) if noise else None
    p = [0.0] * len(_PARAMS)

    def put(name: str, value: float) -> None:
        p[_P[name]] = float(value)

    # label, tone and the planted effects
    if opts.split == "test":
        label = index % len(CLASSES)
        tone = (index // len(CLASSES)) % len(TONES)
        dark = 1.0
    else:
        label = min(int(u[0] * len(CLASSES)), len(CLASSES) - 1)
        if opts.rare_tone is not None:
            rare = TONES.index(opts.rare_tone)
            if u[1] < opts.rare_fraction:
                tone = rare
            else:
                others = [t for t in range(len(TONES)) if t != rare]
                tone = others[min(int(u[2] * len(others)), len(others) - 1)]
        else:
            tone = min(int(u[2] * len(TONES)), len(TONES) - 1)
        fraction = opts.dark_sad if CLASSES[label] == "sad" else opts.dark_other
        dark = 0.35 + 0.15 * u[4] if u[3] < fraction else 1.0
    put("label", label)
    put("tone", tone)
    put("dark", dark)
    name = CLASSES[label]

    # pose
    put("cx", 0.5 + 0.08 * (u[5] - 0.5))
    put("cy", 0.52 + 0.08 * (u[6] - 0.5))
    put("scale", 0.92 + 0.14 * u[7])
    angle = math.radians(12.0 * (u[8] - 0.5))
    put("rot_c", math.cos(angle))
    put("rot_s", math.sin(angle))

    # head and hair
    face_rx = 0.31 + 0.05 * u[9]
    face_ry = 0.40 + 0.04 * u[10]
    put("face_rx", face_rx)
    put("face_ry", face_ry)
    put("ear", 1.0 if u[11] < 0.85 else 0.0)
    style = u[12]  # short 0.3, long 0.25, curly 0.15, bun 0.1, fringe 0.2
    hair_rx = face_rx + 0.02 + 0.04 * u[13]
    hair_ry = face_ry + 0.03 + 0.04 * u[14]
    wave, freq, top_cut, side_w, side_bottom, bun_r = 0.0, 10.0, -0.02 + 0.08 * u[15], 0.0, 0.0, 0.0
    hl0, hl2 = -0.32 + 0.05 * u[16], 0.04 + 0.05 * u[17]
    if 0.3 <= style < 0.55:  # long
        top_cut, side_w, side_bottom = 0.0, hair_rx, 0.3 + 0.2 * u[18]
    elif 0.55 <= style < 0.7:  # curly
        hair_rx += 0.07 + 0.05 * u[18]
        hair_ry += 0.05 + 0.04 * u[18]
        wave, freq, top_cut = 0.04 + 0.03 * u[19], 12.0 + 6.0 * u[20], 0.05 + 0.1 * u[15]
    elif 0.7 <= style < 0.8:  # bun
        bun_r = 0.09 + 0.04 * u[18]
    elif style >= 0.8:  # fringe
        hl0, hl2 = -0.255 + 0.01 * u[16], 0.0
    put("hair_rx", hair_rx)
    put("hair_ry", hair_ry)
    put("hair_wave", wave)
    put("hair_freq", freq)
    put("hair_phase", 6.283 * u[21])
    put("top_cut", top_cut)
    put("side_w", side_w)
    put("side_bottom", side_bottom)
    put("bun_r", bun_r)
    put("hl0", hl0)
    put("hl2", hl2)

    # expression: the class's shapes, at a random intensity, plus small jitter
    expr = _EXPR[name]
    k = 0.4 + 0.85 * u[22]

    def e(key: str) -> float:
        return _NEUTRAL[key] + k * (expr[key] - _NEUTRAL[key])

    put("eye_x", 0.135 + 0.025 * (u[23] - 0.5))
    put("eye_y", -0.03 + 0.02 * (u[24] - 0.5))
    put("eye_rx", 0.058 + 0.012 * u[25])
    put("eye_ry", e("eye_ry") * (0.9 + 0.2 * u[26]))
    put("pupil_r", 0.02 + 0.006 * u[27])
    put("gaze", 0.02 * (u[28] - 0.5))
    brow_v = e("brow_v") + 0.012 * (u[29] - 0.5)
    slant, arch = e("slant"), e("arch")
    brow_v_l = brow_v_r = brow_v
    slant_l = slant_r = slant
    if name == "disgust":  # one brow lowered and pulled in
        if u[30] < 0.5:
            brow_v_l, slant_l = brow_v + 0.035 * k, -0.035 * k
        else:
            brow_v_r, slant_r = brow_v + 0.035 * k, -0.035 * k
    put("brow_v_l", brow_v_l)
    put("brow_v_r", brow_v_r)
    put("slant_l", slant_l)
    put("slant_r", slant_r)
    put("arch", arch)
    put("brow_w", 0.07 + 0.015 * u[31])
    put("brow_t", e("brow_t") * (0.85 + 0.3 * u[32]))
    put("nose_v", 0.1 + 0.02 * (u[33] - 0.5))
    put("nose_rx", 0.025 + 0.012 * u[34])
    put("nose_ry", 0.05 + 0.02 * u[35])

    put("m_v", 0.245 + 0.025 * (u[36] - 0.5))
    put("m_w", e("m_w") * (0.9 + 0.2 * u[37]))
    put("m_a", e("m_a"))
    tilt = e("m_b") * (1.0 if u[38] < 0.5 else -1.0)
    put("m_b", tilt)
    put("m_s", e("m_s") * (1.0 if u[38] < 0.5 else -1.0))
    hu, hl = e("m_hu"), e("m_hl")
    teeth = 0.0
    if name == "happy" and u[39] < 0.55:  # an open smile, teeth showing
        hl, teeth = 0.03 + 0.03 * u[40], 1.0
    put("m_hu", hu)
    put("m_hl", hl)
    put("m_p", _MOUTH_P.get(name, 1.0))
    put("m_t", e("m_t") * (0.9 + 0.2 * u[41]))
    put("teeth", teeth)

    # colours
    skin = SKIN_RGB[tone] * (1.0 + 0.08 * (np.array(u[42:45]) - 0.5))
    put("skin_r", skin[0])
    put("skin_g", skin[1])
    put("skin_b", skin[2])
    hair_idx = int(np.searchsorted(_HAIR_CUM[tone], u[45] * _HAIR_CUM[tone][-1], side="right"))
    hair_idx = min(hair_idx, len(HAIR_RGB) - 1)
    hair = HAIR_RGB[hair_idx] * (0.85 + 0.3 * u[46])
    put("hair_r", hair[0])
    put("hair_g", hair[1])
    put("hair_b", hair[2])
    brow = 0.22 * hair + 0.02
    put("brow_r", brow[0])
    put("brow_g", brow[1])
    put("brow_b", brow[2])
    iris = [(0.25, 0.15, 0.08), (0.12, 0.08, 0.05), (0.2, 0.3, 0.45), (0.22, 0.32, 0.2)][
        min(int(u[47] * 4), 3)
    ]
    put("iris_r", iris[0])
    put("iris_g", iris[1])
    put("iris_b", iris[2])
    bg = _hsv_to_rgb(u[48], 0.12 + 0.3 * u[49], 0.45 + 0.45 * u[50])
    put("bg_r", bg[0])
    put("bg_g", bg[1])
    put("bg_b", bg[2])
    put("bg_grad", 0.4 * (u[51] - 0.5))
    put("hair_tex", 0.12 * u[52])
    put("light", 0.88 + 0.2 * u[53])
    put("tint_r", 1.0 + 0.06 * (u[54] - 0.5))
    put("tint_g", 1.0 + 0.06 * (u[55] - 0.5))
    put("tint_b", 1.0 + 0.06 * (u[56] - 0.5))
    put("noise", 0.012 + 0.018 * u[57])
    # the optional cues, the same in every split (u[58], u[59] are drawn for every sample anyway)
    put("stamp", 1.0 if name == opts.stamp_class and u[58] < opts.stamp_fraction else 0.0)
    put("bg_tint", TINT_WEIGHT if name == opts.tint_class and u[59] < opts.tint_fraction else 0.0)
    return p, pixels


def stamp_box(size: int, side: float = STAMP_SIDE) -> tuple[int, int, int, int]:
    """The planted stamp's pixels ``[y0, x0, y1, x1)`` in a ``size`` image: a small square near the top-left
    corner (of ``side`` times the image's side), where neither face nor hair reaches at the default side."""
    side, offset = max(3, round(side * size)), max(1, round(0.03 * size))
    return offset, offset, offset + side, offset + side


def _render(
    params: np.ndarray, noise: np.ndarray, size: int, stamp_region: bool = False, masked: bool = False,
    stamp_side: float = STAMP_SIDE,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw a batch: params (B, K) float32, noise (B, 3, H, W) -> images, region masks.

    A stamped image's stamp pixels belong to no other region; ``stamp_region`` adds them as ``stamp``.

    Every operation is elementwise per sample, so a sample comes out the same
    alone or in a batch.
    """
    f32 = np.float32

    def P(name: str) -> np.ndarray:
        return params[:, _P[name]][:, None, None]

    def C(*names: str) -> np.ndarray:  # (B, 3, 1, 1) colour
        return np.stack([params[:, _P[n]] for n in names], axis=1)[:, :, None, None]

    g = ((np.arange(size, dtype=f32) + f32(0.5)) / f32(size)).astype(f32)
    X, Y = g[None, None, :], g[None, :, None]
    dx, dy = X - P("cx"), Y - P("cy")
    sc = P("scale")
    u = (P("rot_c") * dx + P("rot_s") * dy) / sc
    v = (P("rot_c") * dy - P("rot_s") * dx) / sc
    px = f32(1.0) / (f32(size) * sc)  # one pixel in face units

    # head: an ellipse plus ears
    frx, fry = P("face_rx"), P("face_ry")
    fv = v - f32(0.03)
    fe = (u / frx) ** 2 + (fv / fry) ** 2
    face = fe <= 1
    ears = (((np.abs(u) - frx * f32(0.97)) / f32(0.045)) ** 2 + (v / f32(0.075)) ** 2 <= 1) & (
        P("ear") > 0
    )
    face |= ears

    # hair: a (possibly wavy) cap, side panels for long hair, a bun; it covers the head above the hairline
    hrx, hry = P("hair_rx"), P("hair_ry")
    hr = np.sqrt((u / hrx) ** 2 + (fv / hry) ** 2)
    theta = np.arctan2(fv, u)
    limit = f32(1.0) + P("hair_wave") * np.sin(P("hair_freq") * theta + P("hair_phase"))
    cap = (hr <= limit) & (v < P("top_cut"))
    sides = (np.abs(u) <= P("side_w")) & (v >= P("top_cut")) & (v <= P("side_bottom"))
    bun_v = f32(0.03) - hry - f32(0.02)
    bun = u**2 + (v - bun_v) ** 2 <= P("bun_r") ** 2
    hairline = P("hl0") + P("hl2") * (u / frx) ** 2
    above = v < hairline
    hair = ((cap | sides | bun) & ~(face & ~above)) | (face & above)
    visible = face & ~hair

    # eyes
    ex, ev = P("eye_x"), P("eye_y")
    erx = P("eye_rx")
    ery = np.maximum(P("eye_ry"), f32(0.6) * px)
    pr = np.maximum(P("pupil_r"), f32(0.6) * px)
    eyes = np.zeros_like(face)
    pupils = np.zeros_like(face)
    for side in (-1.0, 1.0):
        du = u - f32(side) * ex
        eye = (du / erx) ** 2 + ((v - ev) / ery) ** 2 <= 1
        eyes |= eye
        pupils |= eye & ((du - P("gaze")) ** 2 + (v - ev) ** 2 <= pr**2)
    eyes &= visible
    pupils &= eyes

    # brows: thick curved strokes; the inner end rises by `slant`, the ends drop by `arch`
    bw, bt = P("brow_w"), np.maximum(P("brow_t"), f32(0.55) * px)
    arch = P("arch")
    brows = np.zeros_like(face)
    for side, tag in ((-1.0, "l"), (1.0, "r")):
        x = (u - f32(side) * ex) / bw
        slant = P("slant_" + tag)
        curve = P("brow_v_" + tag) + f32(side) * slant * x + arch * x**2
        slope = (f32(side) * slant + f32(2.0) * arch * x) / bw
        brows |= (np.abs(v - curve) <= bt * np.sqrt(f32(1.0) + slope**2)) & (np.abs(x) <= 1)
    brows &= visible & ~eyes

    # nose
    nose = (u / P("nose_rx")) ** 2 + ((v - P("nose_v")) / P("nose_ry")) ** 2 <= 1
    nose &= visible & ~eyes & ~brows

    # mouth: the region between two curves sharing the ends
    mw, mt = P("m_w"), np.maximum(P("m_t"), f32(0.55) * px)
    x = u / mw
    x2 = x**2
    base = P("m_v") + P("m_a") * x2 + P("m_b") * x + P("m_s") * np.sin(f32(math.pi) * x)
    open_profile = np.maximum(f32(1.0) - x2, f32(0.0))
    open_profile = np.where(P("m_p") < 1, np.sqrt(open_profile), open_profile)
    top = base - P("m_hu") * open_profile
    bottom = base + P("m_hl") * open_profile
    mouth = (v >= top - mt) & (v <= bottom + mt) & (np.abs(x) <= 1 + mt / mw)
    mouth &= visible & ~eyes & ~brows & ~nose
    inside = mouth & (v > top + mt) & (v < bottom - mt)
    teeth = inside & (P("teeth") > 0) & (v < top + f32(0.45) * (bottom - top))
    is_open = (P("m_hu") + P("m_hl")) > f32(2.0) * mt

    skin = visible & ~(eyes | brows | nose | mouth)
    background = ~(face | hair)

    # colour
    col_skin = C("skin_r", "skin_g", "skin_b")
    shade = (f32(1.0) - f32(0.13) * np.minimum(fe, f32(1.3)))[:, None]
    bg_col = C("bg_r", "bg_g", "bg_b")
    bg_col = bg_col + P("bg_tint")[:, None] * (np.array(TINT_RGB, f32)[None, :, None, None] - bg_col)
    bg = bg_col * (f32(1.0) + P("bg_grad")[:, None] * (Y - f32(0.5)))
    img = np.broadcast_to(bg, (params.shape[0], 3, size, size)).astype(f32)

    def paint(mask: np.ndarray, colour: np.ndarray) -> None:
        np.copyto(img, np.broadcast_to(colour, img.shape).astype(f32, copy=False), where=mask[:, None])

    hair_col = C("hair_r", "hair_g", "hair_b") * (
        f32(1.0) + P("hair_tex")[:, None] * np.sin(f32(60.0) * u + f32(9.0) * v)[:, None]
    )
    paint(hair, hair_col)
    paint(visible, col_skin * shade)
    paint(nose, col_skin * shade * f32(0.84))
    paint(eyes, np.array([0.93, 0.93, 0.9], f32)[None, :, None, None])
    paint(pupils, C("iris_r", "iris_g", "iris_b"))
    paint(brows, C("brow_r", "brow_g", "brow_b"))
    paint(mouth, np.array([0.12, 0.03, 0.035], f32)[None, :, None, None])
    lips = mouth & ~inside & is_open
    lip_col = f32(0.45) * col_skin + f32(0.55) * np.array([0.62, 0.2, 0.22], f32)[None, :, None, None]
    paint(lips, lip_col)
    paint(teeth, np.array([0.92, 0.91, 0.86], f32)[None, :, None, None])
    cover = np.zeros_like(face)
    if masked:  # a pleated surgical mask from the middle of the nose down, over the face and a little beyond
        cover = (fe <= f32(1.1)) & (v >= P("nose_v")) & ~(hair & ~face)
        pleats = f32(1.0) - f32(0.12) * (np.sin(f32(40.0) * v) > f32(0.6))
        paint(cover, np.array(FACE_MASK_RGB, f32)[None, :, None, None] * pleats[:, None])

    light = P("light")[:, None] * C("tint_r", "tint_g", "tint_b") * P("dark")[:, None]
    img *= light
    y0, x0, y1, x1 = stamp_box(size, stamp_side)
    stamp = np.zeros_like(face)
    stamp[:, y0:y1, x0:x1] = True
    stamp &= P("stamp") > 0
    paint(stamp, np.array(STAMP_RGB, f32)[None, :, None, None])
    img += noise * P("noise")[:, None]
    np.clip(img, 0.0, 1.0, out=img)

    regions = {
        "eyes": eyes,
        "brows": brows,
        "nose": nose,
        "mouth": mouth,
        "hair": hair,
        "skin": skin,
        "background": background,
    }
    regions = {name: mask & ~stamp & ~cover for name, mask in regions.items()}
    if stamp_region:
        regions["stamp"] = stamp
    return img, regions


class SyntheticFacesDataset(Dataset):
    """Lazily drawn faces; see the module docstring."""

    group_names = ["skin_tone"]
    region_names = list(REGIONS)
    #: every expression is drawn by the mouth, brows and eyes alone (localisation metrics)
    class_regions = {name: ["mouth", "brows", "eyes"] for name in CLASSES}

    def __init__(self, options: SyntheticFacesOptions | None = None):
        self.options = options if options is not None else SyntheticFacesOptions()
        self.classes = list(CLASSES)
        if self.options.stamp_class is not None:
            self.region_names = list(REGIONS) + ["stamp"]

    def __len__(self) -> int:
        return self.options.n

    def _index(self, index: int) -> int:
        index = int(index)
        if index < 0:
            index += self.options.n
        if not 0 <= index < self.options.n:
            raise IndexError(f"sample index out of range (the data set has {self.options.n})")
        return index

    def __getitem__(self, index: int) -> Sample:
        i = self._index(index)
        params, noise = _draw(self.options, i)
        img, regions = _render(np.asarray([params], np.float32), noise[None], self.options.size,
                               stamp_region=self.options.stamp_class is not None, masked=self.options.masked,
                               stamp_side=self.options.stamp_side)
        return Sample(
            id=f"sf-{self.options.split}-{i:05d}",
            image=img[0],
            label=int(params[_P["label"]]),
            groups={"skin_tone": TONES[int(params[_P["tone"]])]},
            regions={name: mask[0] for name, mask in regions.items()},
        )

    def sample_info(self, index: int) -> SampleInfo:
        """The id, label and skin tone of sample ``index`` from its drawn parameters, with no image drawn
        (every synthetic face has its region masks)."""
        i = self._index(index)
        params, _ = _draw(self.options, i, noise=False)
        return SampleInfo(id=f"sf-{self.options.split}-{i:05d}", label=int(params[_P["label"]]),
                          groups={"skin_tone": TONES[int(params[_P["tone"]])]}, has_regions=True)

    def arrays(
        self, indices: Any = None, chunk: int = 256
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Images (N, 3, H, W) float32, labels (N,) int64, tones, drawn in vectorised chunks."""
        idx = range(len(self)) if indices is None else [self._index(i) for i in indices]
        idx = list(idx)
        size = self.options.size
        images = np.empty((len(idx), 3, size, size), np.float32)
        labels = np.empty(len(idx), np.int64)
        tones: list[str] = []
        for start in range(0, len(idx), chunk):
            drawn = [_draw(self.options, i) for i in idx[start : start + chunk]]
            params = np.asarray([d[0] for d in drawn], np.float32)
            noise = np.stack([d[1] for d in drawn])
            img, _ = _render(params, noise, size, masked=self.options.masked, stamp_side=self.options.stamp_side)
            images[start : start + len(drawn)] = img
            labels[start : start + len(drawn)] = params[:, _P["label"]].astype(np.int64)
            tones.extend(TONES[int(t)] for t in params[:, _P["tone"]])
        return images, labels, tones

    def fingerprint(self) -> str:
        options = self.options.model_dump()
        for cue in ("stamp", "tint"):  # a cue switched off leaves the fingerprint as it was before it existed
            if options[f"{cue}_class"] is None:
                del options[f"{cue}_class"], options[f"{cue}_fraction"]
        if options.get("stamp_side") == STAMP_SIDE:  # the default side, as before the option existed
            del options["stamp_side"]
        if not options["masked"]:  # likewise the face mask
            del options["masked"]
        payload = json.dumps({"generator": GENERATOR_VERSION, "options": options}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def planted(self) -> list[str]:
        """The planted effects, in words ([] when switched off; the test split has only the stamp and tint)."""
        o = self.options
        out = []
        if o.stamp_class is not None and o.stamp_fraction > 0:
            y0, x0, y1, x1 = stamp_box(o.size, o.stamp_side)
            out.append(f"{o.stamp_fraction:.0%} of '{o.stamp_class}' images carry a bright square mark at the "
                       f"top-left corner (rows {y0}-{y1 - 1}, columns {x0}-{x1 - 1})")
        if o.tint_class is not None and o.tint_fraction > 0:
            out.append(f"{o.tint_fraction:.0%} of '{o.tint_class}' images have a green-tinted background")
        if o.split != "train":
            return out
        if o.dark_sad > 0:
            out.append(
                f"in the train split, {o.dark_sad:.0%} of 'sad' images are darkened (RGB x 0.35-0.5)"
            )
        if o.dark_other > 0:
            out.append(
                f"in the train split, {o.dark_other:.0%} of the other images are darkened"
                + (" too" if o.dark_sad > 0 else "")
            )
        if o.rare_tone is not None and abs(o.rare_fraction - 1 / len(TONES)) > 1e-9:
            out.append(f"skin tone {o.rare_tone} is {o.rare_fraction:.0%} of the train split")
        return out

    def describe(self) -> dict[str, Any]:
        o = self.options
        return {
            "source": "synthetic-faces",
            "generator": GENERATOR_VERSION,
            "split": o.split,
            "n": o.n,
            "n_samples": o.n,
            "size": o.size,
            "seed": o.seed,
            "classes": list(CLASSES),
            "groups": {"skin_tone": list(TONES)},
            "regions": list(self.region_names),
            "balanced": o.split == "test",
            "planted": self.planted(),
        }


def load_arrays(dataset: Dataset) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All of ``dataset`` as arrays: images (N, 3, H, W) float32, labels (N,) int64, skin tones.

    Vectorised for synthetic-faces; any other data set is read sample by sample
    (its labels must all be set; tones are ``groups["skin_tone"]`` or "").
    """
    if isinstance(dataset, SyntheticFacesDataset):
        return dataset.arrays()
    samples = [dataset[i] for i in range(len(dataset))]
    if any(s.label is None for s in samples):
        raise ValueError("load_arrays needs every sample labelled")
    if samples:
        images = np.stack([s.image for s in samples]).astype(np.float32)
    else:
        images = np.zeros((0, 3, 0, 0), np.float32)
    labels = np.asarray([s.label for s in samples], dtype=np.int64)
    tones = [str(s.groups.get("skin_tone", "")) for s in samples]
    return images, labels, tones


class SyntheticFacesPlugin(DatasetPlugin):
    name = "synthetic-faces"
    description = (
        "Procedurally drawn faces (7 expressions, 6 skin tones, exact region masks), seeded; "
        "the train split plants a darkness shortcut on 'sad' and a rare skin tone."
    )
    Options = SyntheticFacesOptions

    def load(self, context: LoadContext) -> Dataset:
        return SyntheticFacesDataset(self.options)
