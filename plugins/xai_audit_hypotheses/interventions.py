"""Hypotheses that change every image the same way and compare predictions.

With labels, the metric is accuracy on the same images before and after
(exact McNemar test, paired bootstrap interval of the drop). Without labels,
it is how often the prediction changes from the clean prediction (flip rate).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from pydantic import Field

from xai_audit.stats import ALPHA, bootstrap_paired_diff_ci, mcnemar_exact, wilson_ci
from xai_audit.types import HypothesisContext, HypothesisPlugin, HypothesisResult, Options

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(1, 3, 1, 1)


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) RGB -> luminance repeated on three channels."""
    luma = (images * LUMA).sum(axis=1, keepdims=True)
    return np.repeat(luma, 3, axis=1).astype(np.float32)


def intervention_result(
    context: HypothesisContext,
    transform: Callable[[np.ndarray], np.ndarray],
    *,
    what: str,
    min_effect: float,
) -> HypothesisResult:
    """Test whether ``transform`` (described by ``what``) hurts the model."""
    before = context.probs
    after = context.predict(transform(context.images()))
    pred_before = before.argmax(axis=1)
    pred_after = after.argmax(axis=1)
    classes = context.classes
    labels = context.labels
    n = len(pred_before)
    shift = [
        {
            "class": name,
            "share before": float(np.mean(pred_before == k)),
            "share after": float(np.mean(pred_after == k)),
            "change": float(np.mean(pred_after == k) - np.mean(pred_before == k)),
        }
        for k, name in enumerate(classes)
    ]
    shift_figure = {
        "kind": "bars",
        "title": "Share of predictions per class, before and after",
        "labels": list(classes),
        "series": [
            {"label": "clean", "values": [row["share before"] for row in shift]},
            {"label": "after", "values": [row["share after"] for row in shift]},
        ],
        "ylabel": "share of predictions",
        "caption": f"Where the predictions go when {what}: a class that gains many predictions is where "
        "a shortcut drains the errors; an even spread of losses is plain fragility.",
        "alt": "Bar chart of the share of predictions per class on clean images and after the intervention.",
    }
    flips = pred_before != pred_after
    changed = [context.samples[i].id for i in np.flatnonzero(flips)[:8]]
    details = {
        "flip_rate": float(flips.mean()) if n else 0.0,
        "mean_confidence_before": float(before.max(axis=1).mean()) if n else None,
        "mean_confidence_after": float(after.max(axis=1).mean()) if n else None,
        "min_effect": min_effect,
    }
    if labels is None:
        ci = wilson_ci(int(flips.sum()), n)
        return HypothesisResult(
            claim=f"The model's predictions change when {what}.",
            metric="flip rate",
            before=0.0,
            after=float(flips.mean()),
            effect=float(flips.mean()),
            ci=ci,
            p_value=None,
            verdict="supported" if ci is not None and ci[0] > min_effect else "not supported",
            n=n,
            test="Wilson interval of the flip rate (no labels: compared with the clean prediction)",
            breakdown={"prediction shift": shift},
            examples=changed,
            details=details,
            figures=[shift_figure],
        )
    correct_before = pred_before == labels
    correct_after = pred_after == labels
    p_value, b, c = mcnemar_exact(correct_before, correct_after)
    drop = float(correct_before.mean() - correct_after.mean())
    ci = bootstrap_paired_diff_ci(correct_before, correct_after, seed=context.seed)
    per_class = []
    for k, name in enumerate(classes):
        mask = labels == k
        if mask.any():
            per_class.append(
                {
                    "class": name,
                    "n": int(mask.sum()),
                    "recall before": float(correct_before[mask].mean()),
                    "recall after": float(correct_after[mask].mean()),
                }
            )
    details.update({"correct_then_wrong": b, "wrong_then_correct": c})
    supported = p_value < ALPHA and drop > 0 and ci[0] > min_effect
    return HypothesisResult(
        claim=f"The model's accuracy drops when {what}.",
        metric="accuracy",
        before=float(correct_before.mean()),
        after=float(correct_after.mean()),
        effect=drop,
        ci=ci,
        p_value=p_value,
        verdict="supported" if supported else "not supported",
        n=n,
        test="exact McNemar test on paired outcomes; 95 % paired bootstrap interval of the drop",
        breakdown={"per class": per_class, "prediction shift": shift},
        examples=changed,
        details=details,
        figures=[shift_figure],
    )


class GrayscaleOptions(Options):
    min_effect: float = Field(0.0, ge=0, le=1, description="smallest accuracy drop worth reporting")


class GrayscaleHypothesis(HypothesisPlugin):
    name = "grayscale"
    description = "Does the model need colour? Compare predictions on grayscale copies of the images."
    Options = GrayscaleOptions

    def test(self, context: HypothesisContext) -> HypothesisResult:
        return intervention_result(
            context, to_grayscale, what="the images are shown in grayscale", min_effect=self.options.min_effect
        )
