"""dataset-shift: is the model as accurate on another data set (e.g. masked faces)?

    hypotheses:
      - dataset-shift:
          dataset: {loader: image-folder, path: data/masked}
          label_map: {joy: happy, sorrow: sad}   # other data set's class -> model class

The other data set's images are different images, so the comparison is
unpaired: a two-proportion test of accuracy and a bootstrap interval of the
difference. Without labels (or with no class mapped) the prediction shares of
the two data sets are compared instead (chi-square test of independence).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, field_validator

from xai_audit.api import (
    ALPHA,
    DEFAULT_TARGET_WIDTH,
    DataError,
    Dataset,
    HypothesisContext,
    HypothesisPlugin,
    HypothesisResult,
    Options,
    bootstrap_two_sample_diff_ci,
    chi2_independence,
    recommendation,
    samples_for_ci_width,
    two_proportion_test,
    wilson_ci,
)


class DatasetShiftOptions(Options):
    dataset: dict[str, Any] = Field(..., description="the other data set, as the plan's dataset entry (loader: ...)")
    label_map: dict[str, str | None] = Field(
        default_factory=dict,
        description="other data set's class -> model class (null drops it); same-named classes map themselves",
    )
    sample: int | None = Field(None, ge=1, description="use at most this many of the other data set's images")
    min_effect: float = Field(0.0, ge=0, le=1, description="smallest accuracy drop worth reporting")
    name: str = Field("", description="a short name for the other data set in the report")

    @field_validator("dataset")
    @classmethod
    def _has_loader(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("loader"), str):
            raise ValueError("needs 'loader': the data set plugin to read it with")
        return value


class DatasetShiftHypothesis(HypothesisPlugin):
    name = "dataset-shift"
    description = "Evaluate on another data set (with a label mapping) and compare with the audited one."
    Options = DatasetShiftOptions

    def recommend(self, finding, result):
        """A shift: labelled images like the other data set's, as many as pin its accuracy to 6 pp."""
        if finding is None or finding.get("kind") != "shift":
            return []
        after = result.get("after")
        needed = samples_for_ci_width(after if after is not None else 0.5, DEFAULT_TARGET_WIDTH)
        return [recommendation(
            "add-data", kind="shift", group=str((result.get("details") or {}).get("other_data_set", "")),
            count=needed, reason=f"Data shift: {finding.get('title')} Add labelled images like these to the "
                                 "fine-tuning data.",
            finding=finding.get("source", ""),
        )]

    def test(self, context: HypothesisContext) -> HypothesisResult:
        opts: DatasetShiftOptions = self.options
        if context.load_dataset is None:
            raise DataError("dataset-shift: this host cannot load a second data set")
        other = context.load_dataset(dict(opts.dataset))
        label = opts.name or str(opts.dataset.get("path") or opts.dataset["loader"])
        indices = np.arange(len(other))
        if opts.sample is not None and opts.sample < len(other):
            indices = np.sort(np.random.default_rng(context.seed).choice(len(other), opts.sample, replace=False))
        if not len(indices):
            raise DataError(f"dataset-shift: the data set {label!r} has no samples")
        mapping = _mapping(other, context.classes, opts.label_map)
        # chunk by chunk: the other data set may be large; only labels are kept
        labels_other: list[int | None] = []
        parts = []
        for start in range(0, len(indices), 256):
            chunk = [other[int(i)] for i in indices[start : start + 256]]
            labels_other += [s.label for s in chunk]
            parts.append(context.predict(np.stack([s.image for s in chunk]).astype(np.float32)))
        probs = np.concatenate(parts)
        pred_other = probs.argmax(axis=1)
        pred_here = context.probs.argmax(axis=1)
        shares = [
            {"class": c, f"share (audited)": float(np.mean(pred_here == k)), f"share ({label})": float(np.mean(pred_other == k))}
            for k, c in enumerate(context.classes)
        ]
        figure = {
            "kind": "bars", "title": "Share of predictions per class on each data set",
            "labels": list(context.classes),
            "series": [
                {"label": "audited", "values": [float(np.mean(pred_here == k)) for k in range(len(context.classes))]},
                {"label": label, "values": [float(np.mean(pred_other == k)) for k in range(len(context.classes))]},
            ],
            "ylabel": "share of predictions",
            "caption": f"Where the model's predictions go on the audited data and on {label}.",
            "alt": "Bar chart of prediction shares per class on the two data sets.",
        }
        details: dict[str, Any] = {"other_data_set": label, "n_other": len(indices), "label_map": _map_text(mapping, other)}
        labels_here = context.labels
        mapped = None
        if mapping is not None and labels_here is not None and all(lab is not None for lab in labels_other):
            mapped = np.array([mapping.get(int(lab), -1) for lab in labels_other])
        if mapped is None or not (mapped >= 0).any():
            return self._unlabelled(context, pred_here, pred_other, label, shares, figure, details)
        keep = mapped >= 0
        details["dropped_unmapped"] = int((~keep).sum())
        correct_other = pred_other[keep] == mapped[keep]
        correct_here = pred_here == labels_here
        drop = float(correct_here.mean() - correct_other.mean())
        p_value = two_proportion_test(int(correct_here.sum()), len(correct_here), int(correct_other.sum()), len(correct_other))
        ci = bootstrap_two_sample_diff_ci(correct_here, correct_other, seed=context.seed)
        ci_other = wilson_ci(int(correct_other.sum()), len(correct_other))
        details["accuracy_other_ci"] = list(ci_other) if ci_other else None
        supported = p_value < ALPHA and drop > 0 and ci[0] > opts.min_effect
        return HypothesisResult(
            claim=f"The model is less accurate on {label} than on the audited data.",
            metric="accuracy",
            before=float(correct_here.mean()), after=float(correct_other.mean()), effect=drop, ci=ci,
            p_value=p_value, verdict="supported" if supported else "not supported", n=int(keep.sum()),
            test="two-proportion test (Fisher's exact for small counts); 95 % bootstrap interval of the difference, "
            "each data set resampled alone",
            breakdown={"prediction shares": shares}, details=details, figures=[figure], kind="shift",
        )

    def _unlabelled(self, context, pred_here, pred_other, label, shares, figure, details) -> HypothesisResult:
        k = len(context.classes)
        share_here = np.bincount(pred_here, minlength=k) / max(1, len(pred_here))
        share_other = np.bincount(pred_other, minlength=k) / max(1, len(pred_other))
        distance = float(0.5 * np.abs(share_here - share_other).sum())
        which = np.r_[np.zeros(len(pred_here), int), np.ones(len(pred_other), int)]
        p_value = chi2_independence(which, np.r_[pred_here, pred_other])
        rng = np.random.default_rng(context.seed)
        boots = []
        for _ in range(1000):
            a = pred_here[rng.integers(0, len(pred_here), len(pred_here))]
            b = pred_other[rng.integers(0, len(pred_other), len(pred_other))]
            boots.append(0.5 * np.abs(np.bincount(a, minlength=k) / len(a) - np.bincount(b, minlength=k) / len(b)).sum())
        ci = (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)))
        supported = p_value < ALPHA and ci[0] > self.options.min_effect
        return HypothesisResult(
            claim=f"The model's predictions are distributed differently on {label}.",
            metric="total variation distance between prediction shares",
            before=None, after=None, effect=distance, ci=ci, p_value=p_value,
            verdict="supported" if supported else "not supported", n=len(pred_other),
            test="no usable labels: chi-square test of prediction class by data set; 95 % bootstrap interval",
            breakdown={"prediction shares": shares}, details=details, figures=[figure], kind="shift",
        )


def _mapping(other: Dataset, classes: list[str], label_map: dict[str, str | None]) -> dict[int, int] | None:
    """Other data set's label index -> model class index (unmapped classes are left out)."""
    if other.classes is None:
        return None
    index = {c: k for k, c in enumerate(classes)}
    unknown_keys = [k for k in label_map if k not in other.classes]
    if unknown_keys:
        raise DataError(f"dataset-shift: label_map names {unknown_keys[0]!r}, not a class of the other data set {other.classes}")
    out = {}
    for j, name in enumerate(other.classes):
        target = label_map.get(name, name) if name in label_map else (name if name in index else None)
        if target is None:
            continue
        if target not in index:
            raise DataError(f"dataset-shift: label_map maps {name!r} to {target!r}, not a model class {classes}")
        out[j] = index[target]
    return out


def _map_text(mapping: dict[int, int] | None, other: Dataset) -> str:
    if mapping is None:
        return "none (unlabelled)"
    return ", ".join(f"{other.classes[j]}→{k}" for j, k in mapping.items()) or "no class mapped"
