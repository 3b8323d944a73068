"""occlude-regions: which facial regions does the model rely on? Black out, blur or mean-fill each one.

Regions come from the samples' masks: the data set's own, or a region source
named in the plan (``regions: {source: ...}``); without masks the hypothesis
stops with a clear error. ``lower_face`` is derived from the masks: the face
below the middle of the nose.

Each region is its own test, and every one of them is counted in the audit's
Holm correction. ``groups`` names sets of regions occluded together as one
intervention, one test per group in the same Holm family (the FER study
occluded eyes, nose, mouth and hair at once, and again without hair):

    - occlude-regions: {groups: {all-features: [eyes, nose, mouth, hair], no-hair: [eyes, nose, mouth]}}

With ``groups`` and no ``regions``, only the groups are tested. A region listed in ``label_regions`` carries the label
(occluding the mouth of an expression removes the expression), so a drop
there is *reliance*, which is expected; any other region should not change
the label, so a drop there is *fragility* and a drain of predictions into one
class is a *shortcut*. Without ``label_regions`` every region is read as
reliance.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
from pydantic import Field, field_validator, model_validator
from scipy import ndimage

from xai_audit.api import (
    HypothesisContext,
    HypothesisPlugin,
    HypothesisResult,
    InterventionOptions,
    Sample,
    apply_and_predict,
    compare,
    region_masks,
    shrink_for_report,
    subsample,
)

DERIVED = ("lower_face",)
FACE_PARTS = ("skin", "eyes", "brows", "nose", "mouth")


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


DEFAULT_REGIONS = ["eyes", "brows", "nose", "mouth", "hair", "lower_face"]


class OccludeRegionsOptions(InterventionOptions):
    regions: list[str] | None = Field(
        None, min_length=1,
        description="regions to occlude, one test each (lower_face is derived from the masks); default: "
        "eyes, brows, nose, mouth, hair, lower_face, or none when groups are given",
    )
    groups: dict[str, list[str]] | None = Field(
        None, description="name -> regions occluded together as one intervention, one test per group "
        "(e.g. {all-features: [eyes, nose, mouth, hair], no-hair: [eyes, nose, mouth]})",
    )
    fill: Literal["black", "blur", "mean"] = Field("mean", description="black, a strong blur, or the image's mean colour")
    blur_sigma: float | None = Field(None, gt=0, description="blur: Gaussian sigma in pixels (default: image side / 16)")
    label_regions: list[str] | None = Field(
        None, description="regions that carry the label (occluding them is expected to cost accuracy)"
    )

    @field_validator("regions", "label_regions")
    @classmethod
    def _normalise(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [_norm(v) for v in value]

    @field_validator("groups")
    @classmethod
    def _normalise_groups(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("give at least one group, or leave 'groups' out")
        out = {}
        for name, members in value.items():
            if not str(name).strip():
                raise ValueError("a group needs a name")
            if not members:
                raise ValueError(f"group {name!r} names no region")
            out[str(name).strip()] = list(dict.fromkeys(_norm(m) for m in members))
        return out

    @model_validator(mode="after")
    def _names_differ(self) -> "OccludeRegionsOptions":
        clash = sorted(set(self.groups or {}) & {_norm(r) for r in self.regions or []})
        if clash:
            raise ValueError(f"group {clash[0]!r} has the name of a region: name it otherwise")
        return self

    def interventions(self) -> dict[str, list[str]]:
        """Test name -> the regions occluded together: each region alone, then each group."""
        regions = self.regions if self.regions is not None else ([] if self.groups else DEFAULT_REGIONS)
        return {**{r: [r] for r in dict.fromkeys(regions)}, **(self.groups or {})}


def lower_face_mask(sample: Sample) -> np.ndarray:
    """The face (skin and features) below the middle of the nose."""
    regions = sample.regions or {}
    face = np.zeros(sample.image.shape[-2:], bool)
    for part in FACE_PARTS:
        if part in regions:
            face |= np.asarray(regions[part], bool)
    nose = np.asarray(regions.get("nose", np.zeros_like(face)), bool)
    rows = np.flatnonzero(nose.any(axis=1)) if nose.any() else np.flatnonzero(face.any(axis=1))
    if len(rows) == 0:
        return face
    cut = int(round(rows.mean()))
    mask = face.copy()
    mask[:cut] = False
    return mask


def group_masks(samples: Sequence[Sample], regions: Sequence[str], plugin: str) -> np.ndarray:
    """The union of ``regions``' masks (N, H, W)."""
    masks = masks_for(samples, regions[0], plugin)
    for region in regions[1:]:
        masks = masks | masks_for(samples, region, plugin)
    return masks


def needed_masks(regions) -> list[str]:
    """The masks the samples must have to give ``regions`` (a derived region needs the nose's)."""
    return list(dict.fromkeys("nose" if r == "lower_face" else r for r in regions))


def masks_for(samples: Sequence[Sample], region: str, plugin: str) -> np.ndarray:
    if region == "lower_face":
        region_masks(samples, "nose", plugin)  # the clear error when there are no masks
        return np.stack([lower_face_mask(s) for s in samples])
    return region_masks(samples, region, plugin)


def fill_images(images: np.ndarray, masks: np.ndarray, fill: str, sigma: float | None = None) -> np.ndarray:
    """Replace the masked pixels of (N, 3, H, W) images by black, a blur or the image's mean colour."""
    if fill == "black":
        replacement = np.zeros_like(images)
    elif fill == "mean":
        replacement = np.broadcast_to(images.mean(axis=(2, 3), keepdims=True), images.shape)
    else:
        s = sigma or max(1.0, images.shape[-1] / 16)
        replacement = ndimage.gaussian_filter(images, sigma=(0, 0, s, s), mode="nearest")
    return np.where(masks[:, None], replacement, images).astype(np.float32)


class OccludeRegionsHypothesis(HypothesisPlugin):
    name = "occlude-regions"
    description = "Occlude named regions (eyes, brows, nose, mouth, hair, lower face) one at a time; which matter?"
    Options = OccludeRegionsOptions

    def augmentation(self, finding, result):
        """Occlude the region the finding is about; hiding a part that carries the label (reliance) needs no cure."""
        if finding.get("kind") == "reliance":
            return None
        test = finding.get("test", "primary")
        if test in ("primary", "shortcut"):
            region = str((result.get("details") or {}).get("primary_region", ""))
        else:
            region = test.split(": ", 1)[-1].replace("occlude ", "")
        members = self.options.interventions().get(region, [region])
        if members != [region]:
            return {"transform": "occlude", "regions": members, "group": region, "fill": self.options.fill}
        return {"transform": "occlude", "region": region, "fill": self.options.fill}

    def needs_regions(self) -> list[str]:
        """Every region occluded (lower_face is cut from the masks at the nose)."""
        return needed_masks(r for members in self.options.interventions().values() for r in members)

    def test(self, context: HypothesisContext) -> HypothesisResult:
        opts: OccludeRegionsOptions = self.options
        context = subsample(context, opts.sample)
        label_regions = set(opts.label_regions or [])
        results: dict[str, HypothesisResult] = {}
        interventions = opts.interventions()
        for region, members in interventions.items():
            def change(images: np.ndarray, samples: Sequence[Sample], members: list[str] = members) -> np.ndarray:
                return fill_images(images, group_masks(samples, members, self.name), opts.fill, opts.blur_sigma)

            preserves = opts.label_regions is not None and not set(members) & label_regions
            what = (f"the {_spoken(region)} occluded ({opts.fill} fill)" if members == [region] else
                    f"the {_listed(members)} occluded together ({region}, {opts.fill} fill)")
            run = apply_and_predict(context, change, what=what)
            results[region] = compare(context, run, what=what, options=opts, preserves_label=preserves)
            results[region].details["region"] = region
            if members != [region]:
                results[region].details["occluded together"] = ", ".join(members)
        primary_region = max(results, key=lambda r: (results[r].effect or 0.0))
        primary = results[primary_region]
        tests: list[dict[str, Any]] = []
        for region, result in results.items():
            if region != primary_region:
                tests.append(_as_test(f"occlude {region}", result))
            for test in result.tests:
                explains = "" if region == primary_region else f"occlude {region}"
                tests.append({**test, "name": f"{test['name']}: {region}", "explains": explains})
        primary.tests = tests
        primary.breakdown = {"by region": _region_rows(results, label_regions, interventions),
                             **primary.breakdown}
        primary.details.update({
            "regions": ", ".join(results), "fill": opts.fill,
            "groups": {name: ", ".join(members) for name, members in (opts.groups or {}).items()},
            "label_regions": ", ".join(sorted(label_regions)) if opts.label_regions is not None else "not given",
            "primary_region": primary_region,
        })
        strip, titles = _region_strip(context, opts, interventions)
        primary.arrays["regions"] = strip
        primary.figures = [
            _drop_figure(results, primary.metric),
            {
                "kind": "images", "title": "", "images": {"array": "regions"}, "titles": titles,
                "columns": len(titles),
                "caption": f"One sample with each region occluded ({opts.fill} fill), as the model saw it.",
                "alt": "A face shown clean and with each region occluded in turn.",
            },
            *[f for f in primary.figures if f["kind"] == "matrix"],
        ]
        for f in primary.figures:
            if f["kind"] == "matrix":
                f["title"] = f"Where the predictions go when the {primary_region.replace('_', ' ')} is occluded"
        return primary


def _listed(regions: Sequence[str]) -> str:
    """'eyes, nose and mouth'."""
    words = [r.replace("_", " ") for r in regions]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _spoken(region: str) -> str:
    """'the eyes are', 'the mouth is'."""
    words = region.replace("_", " ")
    return f"{words} {'are' if words.endswith('s') else 'is'}"


def _as_test(name: str, result: HypothesisResult) -> dict[str, Any]:
    return {
        "name": name, "kind": result.kind, "claim": result.claim, "metric": result.metric,
        "before": result.before, "after": result.after, "effect": result.effect,
        "ci": list(result.ci) if result.ci is not None else None, "p_value": result.p_value,
        "verdict": result.verdict, "n": result.n, "test": result.test,
        "details": {k: v for k, v in result.details.items() if k in ("region", "flip_rate", "correct_then_wrong",
                                                                      "wrong_then_correct", "largest_gain",
                                                                      "occluded together")},
    }


def _region_rows(results: dict[str, HypothesisResult], label_regions: set[str],
                 interventions: dict[str, list[str]]) -> list[dict[str, Any]]:
    rows = []
    for region, r in results.items():
        shortcut = next((t for t in r.tests if t["kind"] == "shortcut"), None)
        members = interventions.get(region, [region])
        rows.append({
            "region": region if members == [region] else f"{region} ({', '.join(members)})",
            "carries the label": bool(set(members) & label_regions),
            r.metric + " after": r.after,
            "effect": r.effect,
            "ci low": r.ci[0] if r.ci else None,
            "ci high": r.ci[1] if r.ci else None,
            "p-value": r.p_value,
            "largest gain": (
                f"{shortcut['details']['class']} {100 * shortcut['effect']:+.1f} pp" if shortcut
                else r.details.get("largest_gain", "")
            ),
        })
    return rows


def _drop_figure(results: dict[str, HypothesisResult], metric: str) -> dict[str, Any]:
    names = list(results)
    effects = [results[r].effect or 0.0 for r in names]
    return {
        "kind": "bars",
        "title": "Effect of occluding each region",
        "labels": [r.replace("_", " ") for r in names],
        "series": [{
            "label": "effect",
            "values": effects,
            "low": [results[r].ci[0] if results[r].ci else e for r, e in zip(names, effects)],
            "high": [results[r].ci[1] if results[r].ci else e for r, e in zip(names, effects)],
        }],
        "ylabel": "accuracy drop" if metric == "accuracy" else "flip rate",
        "caption": ("How much each occluded region costs in accuracy, with 95 % intervals." if metric == "accuracy"
                    else "How often occluding each region changes the model's prediction (flip rate), with 95 % "
                    "intervals."),
        "alt": "Bar chart of the effect of occluding each region, with confidence intervals.",
    }


def _region_strip(context: HypothesisContext, opts: OccludeRegionsOptions, interventions: dict[str, list[str]]):
    sample = context.samples[0]
    images = [shrink_for_report(sample.image)]
    titles = ["clean"]
    for region, members in interventions.items():
        mask = group_masks([sample], members, "occlude-regions")
        images.append(shrink_for_report(fill_images(sample.image[None], mask, opts.fill, opts.blur_sigma)[0]))
        titles.append(region.replace("_", " "))
    return np.stack(images).astype(np.float32), titles
