"""property-slices: image properties that tell the images predicted one class from the rest.

    discoverers:
      - property-slices: {min_auc: 0.8}

For every image of the discovery split: brightness, contrast, saturation, colourfulness, sharpness and the
mean colour of the border ring (a proxy for the background), see ``_common.MEANING``; with ``metadata: true``
also one indicator per value of each group column of ``sample.groups``. For each predicted class (with at least
``min_members`` images predicted it and as many not) and each property: the AUC of the property between the
images predicted that class and the others, with a two-sided Mann-Whitney p-value. A separation at least
``min_auc`` (either way) whose p-value stays under ``alpha`` after Bonferroni over every (class, property)
pair tried is a candidate cue, described in words ("images predicted 'sad' are darker: brightness 0.21 vs
0.48"), whose intervention moves the property back to the other images' typical value (brightness, contrast,
saturation, colourfulness, sharpness: each image matched to the others' median; border colour: the background
shifted to the others' mean border colour).

One cue moves several properties (a darkened image is also lower in contrast and less saturated), so per
class the strongest property is taken first (ties in the order of ``_common.PROPERTIES``), its intervention is
applied to that class's images, and a further property of the class is kept only if it still separates them
from the others afterwards. The strongest candidates across classes come first, at most ``max_candidates``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field
from scipy import stats

from xai_audit.api import Candidate, DiscovererPlugin, DiscoveryContext, Options, Sample, array_ref, stack_images
from xai_audit_discovery._common import (
    CUE,
    MEANING,
    PROPERTIES,
    TRIED,
    WORDS,
    properties,
    property_values,
    slug,
    transform_for,
    unique_name,
)

#: AUCs are ranked to this many decimals: a difference in the third is no evidence, and the order of
#: ``TRIED`` (the simpler explanation first) decides
_DIGITS = 2
#: two candidates of one property whose classes are this close to complements are one cue seen from both sides
_MIRROR = 0.8
#: examples shown in a candidate's figure, from the slice and from the other images
_EXAMPLES = 4


class PropertySlicesOptions(Options):
    min_auc: float = Field(0.8, ge=0.5, le=1.0, description="smallest AUC (either way) of a property between the "
                                                            "images predicted a class and the others")
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="significance level, Bonferroni-corrected over every "
                                                           "(class, property) pair tried")
    min_members: int = Field(10, ge=2, description="a class is tried only with this many images predicted it, and "
                                                   "as many predicted something else")
    max_candidates: int = Field(4, ge=1, le=50, description="propose at most this many candidates")
    metadata: bool = Field(False, description="also try each value of the samples' group columns (sample.groups); "
                                              "such a cue has no image intervention (op 'none'), so the held-back "
                                              "check cannot confirm it")


class PropertySlicesDiscoverer(DiscovererPlugin):
    name = "property-slices"
    description = ("Image properties (brightness, contrast, saturation, colourfulness, sharpness, border colour) "
                   "that separate the images predicted one class from the others (AUC, Mann-Whitney, Bonferroni); "
                   "each proposed with an intervention that moves the property back to the data's typical value.")
    Options = PropertySlicesOptions
    needs_gradients = False

    def discover(self, context: DiscoveryContext) -> list[Candidate]:
        o = self.options
        samples = list(context.samples)
        n = len(samples)
        if n == 0:
            return []
        preds = np.asarray(context.preds)
        values = properties(samples)
        rgb = np.stack([values["border_r"], values["border_g"], values["border_b"]], axis=1)
        names = list(TRIED)
        if o.metadata:
            for column in sorted({key for s in samples for key in s.groups}):
                for value in sorted({str(s.groups.get(column, "")) for s in samples}):
                    key = f"group:{column}={value}"
                    values[key] = np.array([str(s.groups.get(column, "")) == value for s in samples], np.float64)
                    names.append(key)
        tried = [c for c in range(len(context.classes))
                 if o.min_members <= int((preds == c).sum()) <= n - o.min_members]
        n_tests = len(tried) * len(names)
        if not n_tests:
            return []
        threshold = o.alpha / n_tests
        has_background = all(s.regions and "background" in s.regions for s in samples)

        found: list[tuple[float, float, int, int, Candidate]] = []
        for c in tried:
            in_class = preds == c
            direction = _fisher(rgb, in_class)  # the border's colour, read along what tells this class apart
            x_of = {name: (rgb @ direction if name == "border_colour" else values[name]) for name in names}
            rows = []
            for k, name in enumerate(names):
                auc, p = _auc(x_of[name][in_class], x_of[name][~in_class])
                if max(auc, 1 - auc) >= o.min_auc and p <= threshold:
                    rows.append((max(auc, 1 - auc), k, name, auc, p))
            rows.sort(key=lambda r: (-round(r[0], _DIGITS), r[1]))
            class_samples = [s for s, m in zip(samples, in_class) if m]
            class_images = None
            current = {name: x_of[name][in_class] for name in names}
            for strength, k, name, auc, p in rows:
                now, _ = _auc(current[name], x_of[name][~in_class])
                if (now if auc > 0.5 else 1 - now) < o.min_auc:
                    continue  # explained by a property taken before: its intervention took this one away too
                candidate = self._candidate(context, samples, values, x_of[name], in_class, c, name, auc, p,
                                            n_tests, has_background)
                found.append((strength, p, int(in_class.sum()), k, candidate))
                if candidate.intervention.get("op") != "none":  # what is left of the others once this is removed
                    if class_images is None:
                        class_images = stack_images(class_samples)
                    class_images = transform_for(candidate.intervention)(class_images, class_samples)
                    after = {nm: property_values(class_images, nm) for nm in PROPERTIES}
                    after_rgb = np.stack([after["border_r"], after["border_g"], after["border_b"]], axis=1)
                    current = {nm: (after_rgb @ direction if nm == "border_colour" else after[nm]) if nm in TRIED
                               else current[nm] for nm in names}
        # strongest first; on a tie the smaller class (a slice is the few, not the many), then the smaller p
        found.sort(key=lambda f: (-round(f[0], _DIGITS), f[2], f[1], f[4].target_class, f[3]))
        out: list[Candidate] = []
        kept: list[tuple[str, np.ndarray]] = []
        taken: set[str] = set()
        for *_, candidate in found:
            if len(out) == o.max_candidates:
                break
            in_class = preds == candidate.target_class
            name = candidate.evidence["property"]
            if any(name == other and _jaccard(in_class, ~other_class) >= _MIRROR for other, other_class in kept):
                continue  # the same property seen from the other side (one class against nearly all the rest)
            kept.append((name, in_class))
            candidate.name = unique_name(candidate.name, taken)
            out.append(candidate)
        return out

    def _candidate(self, context: DiscoveryContext, samples: Sequence[Sample], values: Mapping[str, np.ndarray],
                   x: np.ndarray, in_class: np.ndarray, c: int, name: str, auc: float, p: float, n_tests: int,
                   has_background: bool) -> Candidate:
        label = context.classes[c]
        mine, others = x[in_class], x[~in_class]
        higher = auc > 0.5
        med_c, med_o = float(np.median(mine)), float(np.median(others))
        mid = 0.5 * (med_c + med_o)
        side = (x > mid) if higher else (x < mid)
        members = [s.id for s, m in zip(samples, in_class & side) if m]
        evidence: dict[str, Any] = {
            "property": name, "auc": float(auc), "p_value": float(p), "p_bonferroni": float(min(1.0, p * n_tests)),
            "tests": int(n_tests), "class_images": int(in_class.sum()), "other_images": int((~in_class).sum()),
            "class_median": med_c, "others_median": med_o,
        }
        if name.startswith("group:"):
            column, value = name[len("group:"):].split("=", 1)
            share_c, share_o = float(mine.mean()), float(others.mean())
            words = f"{'mostly' if higher else 'rarely'} {column} {value}"
            description = (f"images predicted '{label}' are {words}: {share_c:.0%} of them vs {share_o:.0%} of "
                           f"the others")
            evidence.update(meaning=f"the sample's group {column!r} is {value!r}", class_share=share_c,
                            others_share=share_o,
                            intervention="none: a metadata value has no image intervention, so the held-back "
                                         "check cannot confirm it; look at these images by hand")
            spec: dict[str, Any] = {"op": "none"}
            cue, short = "metadata", f"{column}-{value}"
        elif name == "border_colour":
            rgb_c = [float(values[f"border_{ch}"][in_class].mean()) for ch in "rgb"]
            rgb_o = [float(values[f"border_{ch}"][~in_class].mean()) for ch in "rgb"]
            adjective = _colour_words(np.subtract(rgb_c, rgb_o))
            description = (f"images predicted '{label}' have a {adjective} border (a proxy for the background): "
                           f"mean RGB {_rgb(rgb_c)} vs {_rgb(rgb_o)} for the others")
            evidence.update(meaning=MEANING[name], class_colour=rgb_c, others_colour=rgb_o)
            spec = {"op": "border-colour", "colour": rgb_o, "background_mask": has_background}
            cue, short = "colour", f"{adjective} border"
        else:
            adjective = WORDS[name][int(higher)]
            description = (f"images predicted '{label}' are {adjective}: {name} {med_c:.2f} vs {med_o:.2f} "
                           f"(medians; the others')")
            evidence.update(meaning=MEANING[name])
            spec = {"op": name, "target": med_o}
            cue, short = CUE[name], adjective
        figures, arrays = _examples(samples, in_class, side, x, name, label)
        return Candidate(name=slug(f"{label} {short}"), description=description, cue=cue, members=members,
                         intervention=spec, target_class=int(c), evidence=evidence, figures=figures, arrays=arrays)

    def intervention(self, spec: Mapping[str, Any]) -> Callable[[np.ndarray, Sequence[Sample]], np.ndarray]:
        return transform_for(spec)


def _auc(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """P(a > b) + P(a = b) / 2 and the two-sided Mann-Whitney p-value (1 when there is nothing to tell)."""
    if not len(a) or not len(b):
        return 0.5, 1.0
    if np.ptp(np.concatenate([a, b])) == 0:
        return 0.5, 1.0
    test = stats.mannwhitneyu(a, b, alternative="two-sided")
    return float(test.statistic) / (len(a) * len(b)), float(test.pvalue)


def _fisher(x: np.ndarray, in_class: np.ndarray) -> np.ndarray:
    """Fisher's discriminant direction (unit length) of the rows of ``x`` between ``in_class`` and the rest:
    the pooled within-group covariance (a little ridge keeps it invertible) solved against the mean difference."""
    a, b = x[in_class], x[~in_class]
    difference = a.mean(axis=0) - b.mean(axis=0)
    within = ((a - a.mean(axis=0)).T @ (a - a.mean(axis=0)) + (b - b.mean(axis=0)).T @ (b - b.mean(axis=0)))
    within = within / max(1, len(x) - 2)
    within += (1e-3 * np.trace(within) / len(within) + 1e-12) * np.eye(len(within))
    direction = np.linalg.solve(within, difference)
    return direction / max(float(np.linalg.norm(direction)), 1e-12)


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def _colour_words(difference: np.ndarray) -> str:
    """A colour difference (RGB) in words: its chroma's strongest channel, or darker/brighter when it is
    mostly a change of brightness."""
    level = float(np.mean(difference))
    chroma = difference - level
    if float(np.linalg.norm(chroma)) < 0.5 * abs(level) * np.sqrt(3):
        return "darker" if level < 0 else "brighter"
    k = int(np.argmax(np.abs(chroma)))
    return (("redder", "greener", "bluer") if chroma[k] > 0 else ("more cyan", "more magenta", "yellower"))[k]


def _rgb(colour: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in colour) + ")"


def _examples(samples: Sequence[Sample], in_class: np.ndarray, side: np.ndarray, x: np.ndarray, name: str,
              label: str) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """An ``images`` figure: a few images of the slice, then a few of the others, with the property's value."""
    mine = np.flatnonzero(in_class & side)[:_EXAMPLES]
    rest = np.flatnonzero(~in_class)[:_EXAMPLES]
    picked = list(mine) + list(rest)
    if not picked:
        return [], {}
    shown = name.split(":", 1)[-1]
    titles = [f"'{label}' {shown} {x[i]:.2f}" for i in mine] + [f"other {shown} {x[i]:.2f}" for i in rest]
    figure = {
        "kind": "images", "images": array_ref("examples"), "titles": titles, "columns": _EXAMPLES,
        "title": f"Images predicted '{label}' and others, by {shown}",
        "caption": f"First row: images predicted '{label}' in the slice; then images predicted something else.",
        "alt": f"{len(mine)} images predicted '{label}' and {len(rest)} others, with their {shown}",
    }
    return [figure], {"examples": stack_images([samples[i] for i in picked])}
