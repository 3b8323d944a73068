"""property-shifts: which class the model's predictions drain into when an image property is shifted.

    discoverers:
      - property-shifts: {min_gain: 0.2}

A cue the audited images do not show cannot be found by looking at them: a model that learned "dark means
'sad'" from darkened training images is audited on faces of ordinary brightness, and nothing in them is dark.
This discoverer asks the model instead. Each shift of ``shifts`` (by default brightness and contrast halved and
raised by half, saturation taken to grey and doubled, sharpness halved and doubled) is applied to every
discovery image (the same per-image operations the other discoverers' interventions use, clipped to [0, 1]),
the shifted images are predicted, and for every class the share of images predicted it before and after is
compared: an exact McNemar test on "predicted as the class" (Bonferroni over every (shift, class) pair tried)
and the net share gained. A class that gains at least ``min_gain`` of the images, significantly, is a candidate
cue tied to that class ("darker images are taken for 'sad': 'sad' rises from 10 % to 51 % of the images at
brightness x 0.5"). Its intervention *puts the cue on* the images (the shift itself), so the host confirms it
the other way round: on the held-back images, does applying the shift bring that class's predictions in?

One forward pass per shift over at most ``max_images`` discovery images (a seeded subset, so the cost does not
grow with the audit); no gradients, no labels (the same with and without).
Per class only its largest gain is kept, so one cue is not proposed once per property it moves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from xai_audit.api import (
    Candidate,
    DiscovererPlugin,
    DiscoveryContext,
    Options,
    Sample,
    array_ref,
    mcnemar_exact,
    sample_chunks,
    stack_images,
)
from xai_audit_discovery._common import CUE, WORDS, scale_property, seeded_subset, slug, unique_name

#: images shown in a candidate's figure: as they are, then shifted
_EXAMPLES = 4
#: salt of the seeded subset of images
_SALT = 5


class Shift(BaseModel):
    """One shift: an image property and the factor it is scaled by (1 leaves an image as it is)."""

    model_config = ConfigDict(extra="forbid")
    property: str = Field(description="brightness, contrast, saturation, colourfulness or sharpness")
    factor: float = Field(ge=0.0, le=8.0, description="brightness: pixels x factor; contrast: spread about the mean "
                                                      "luminance; saturation, colourfulness: chroma about each "
                                                      "pixel's grey; sharpness: blend with a blurred copy")

    @field_validator("property")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in WORDS:
            raise ValueError(f"unknown property {value!r}; known: {', '.join(WORDS)}")
        return value

    @field_validator("factor")
    @classmethod
    def _not_one(cls, value: float) -> float:
        if value == 1.0:
            raise ValueError("a factor of 1 shifts nothing")
        return value


DEFAULT_SHIFTS = [
    {"property": "brightness", "factor": 0.5}, {"property": "brightness", "factor": 1.5},
    {"property": "contrast", "factor": 0.5}, {"property": "contrast", "factor": 1.5},
    {"property": "saturation", "factor": 0.0}, {"property": "saturation", "factor": 2.0},
    {"property": "sharpness", "factor": 0.5}, {"property": "sharpness", "factor": 2.0},
]


class PropertyShiftsOptions(Options):
    shifts: list[Shift] = Field(default_factory=lambda: [Shift(**s) for s in DEFAULT_SHIFTS], min_length=1,
                                description="the shifts tried, each {property, factor}")
    min_gain: float = Field(0.2, gt=0.0, le=1.0, description="smallest net share of the images a class must gain "
                                                             "under a shift")
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="significance level, Bonferroni-corrected over every "
                                                           "(shift, class) pair tried")
    max_candidates: int = Field(4, ge=1, le=50, description="propose at most this many candidates")
    max_images: int = Field(300, ge=20, description="shift at most this many discovery images (a seeded subset): "
                                                    "a drain of min_gain shows on a few hundred, and the cost stays "
                                                    "flat in the audit's size")
    chunk: int = Field(256, ge=1, description="images shifted and predicted at a time")


class PropertyShiftsDiscoverer(DiscovererPlugin):
    name = "property-shifts"
    description = ("Image properties (brightness, contrast, saturation, sharpness) shifted on every image: the "
                   "class the predictions drain into (exact McNemar, Bonferroni) is a candidate cue, confirmed on "
                   "the held-back images by the same shift.")
    Options = PropertyShiftsOptions
    needs_gradients = False

    def discover(self, context: DiscoveryContext) -> list[Candidate]:
        o = self.options
        chosen = seeded_subset(len(context.samples), o.max_images, context.seed, _SALT)
        samples = [context.samples[i] for i in chosen]
        n, n_classes = len(samples), len(context.classes)
        if n == 0:
            return []
        before = np.asarray(context.preds)[chosen]
        n_tests = len(o.shifts) * n_classes
        threshold = o.alpha / n_tests
        best: dict[int, tuple[float, float, Shift, np.ndarray]] = {}
        for shift in o.shifts:
            after = self._shifted_predictions(context, samples, shift)
            for c in range(n_classes):
                was, now = before == c, after == c
                gain = float(now.mean() - was.mean())
                if gain < o.min_gain:
                    continue
                p_value, _, _ = mcnemar_exact(was, now)
                if p_value > threshold:
                    continue
                if c not in best or gain > best[c][0]:
                    best[c] = (gain, p_value, shift, after)
        ranked = sorted(best.items(), key=lambda item: (-round(item[1][0], 2), item[1][1], item[0]))
        out: list[Candidate] = []
        taken: set[str] = set()
        for c, (gain, p_value, shift, after) in ranked[: o.max_candidates]:
            candidate = self._candidate(context, samples, before, after, c, shift, gain, p_value, n_tests)
            candidate.name = unique_name(candidate.name, taken)
            out.append(candidate)
        return out

    def _shifted_predictions(self, context: DiscoveryContext, samples: Sequence[Sample], shift: Shift) -> np.ndarray:
        preds = np.zeros(len(samples), np.int64)
        for rows, images in sample_chunks(samples, self.options.chunk):
            shifted = scale_property(images, shift.property, shift.factor)
            preds[rows] = np.asarray(context.predict(shifted)).argmax(axis=1)
        return preds

    def _candidate(self, context: DiscoveryContext, samples: Sequence[Sample], before: np.ndarray,
                   after: np.ndarray, c: int, shift: Shift, gain: float, p_value: float, n_tests: int) -> Candidate:
        label = context.classes[c]
        adjective = WORDS[shift.property][int(shift.factor > 1.0)]
        was, now = before == c, after == c
        newly = now & ~was
        members = [s.id for s, m in zip(samples, newly) if m]
        description = (f"{adjective} images are taken for '{label}': at {shift.property} x {shift.factor:g}, "
                       f"'{label}' rises from {was.mean():.0%} to {now.mean():.0%} of the images")
        evidence = {
            "property": shift.property, "factor": float(shift.factor), "share_before": float(was.mean()),
            "share_after": float(now.mean()), "gain": gain, "newly_predicted": int(newly.sum()),
            "no_longer_predicted": int((was & ~now).sum()), "p_value": float(p_value),
            "p_bonferroni": float(min(1.0, p_value * n_tests)), "tests": int(n_tests), "images": len(samples),
            "intervention": (f"the cue is put on the images ({shift.property} x {shift.factor:g}); the held-back "
                             f"check asks whether that brings '{label}' in"),
        }
        figures, arrays = _examples(samples, newly, shift, label)
        return Candidate(name=slug(f"{adjective} {label}"), description=description, cue=CUE[shift.property],
                         members=members, intervention={"op": "scale", "property": shift.property,
                                                        "factor": float(shift.factor)},
                         target_class=int(c), evidence=evidence, figures=figures, arrays=arrays,
                         intervention_adds_cue=True)

    def intervention(self, spec: Mapping[str, Any]) -> Callable[[np.ndarray, Sequence[Sample]], np.ndarray]:
        if spec.get("op") != "scale":
            raise ValueError(f"property-shifts: unknown intervention op {spec.get('op')!r}; known: scale")
        prop, factor = str(spec["property"]), float(spec["factor"])
        return lambda images, samples: scale_property(images, prop, factor)


def _examples(samples: Sequence[Sample], newly: np.ndarray, shift: Shift,
              label: str) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """An ``images`` figure: a few images newly predicted the class once shifted, as they are and shifted."""
    picked = np.flatnonzero(newly)[:_EXAMPLES]
    if not len(picked):
        return [], {}
    images = stack_images([samples[i] for i in picked])
    shifted = scale_property(images, shift.property, shift.factor)
    words = f"{shift.property} x {shift.factor:g}"
    figure = {
        "kind": "images", "images": array_ref("examples"), "columns": len(picked),
        "titles": ["as audited"] * len(picked) + [f"{words}: '{label}'"] * len(picked),
        "title": f"Images the model takes for '{label}' once shifted ({words})",
        "caption": f"First row: discovery images as audited; second row: the same at {words}, predicted '{label}'.",
        "alt": f"{len(picked)} images before and after {words}, the shifted ones predicted '{label}'",
    }
    return [figure], {"examples": np.concatenate([images, shifted]).astype(np.float32)}
