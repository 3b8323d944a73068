"""The engine every image intervention shares: predict on changed copies, compare, test.

With labels, the primary test is accuracy on the same images before and after
(exact McNemar test on paired correct/incorrect outcomes, paired bootstrap
interval of the drop). Without labels it is agreement with the model's own
clean predictions: the flip rate, with the same exact McNemar test.

An intervention that cannot change what the model receives (grayscale for a
model that takes one channel: the luminance, which a grayscale copy keeps) is
*not applicable*: its verdict says so with the reason, it has no p-value, and
it stays out of the audit's Holm correction.

Either way the engine also reports where the predictions go (the prediction
shift matrix: clean prediction x prediction after), how confidence moves, and,
when the intervention should not change the label, a second test that tells a
shortcut from plain fragility: does one class gain the predictions that
change? (see :func:`xai_audit.contract.stats.class_gain_test`). A shortcut drains the
changed predictions into one class; fragility spreads them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from pydantic import Field

from xai_audit.contract.stats import (
    ALPHA,
    bootstrap_paired_diff_ci,
    class_gain_test,
    mcnemar_exact,
    prediction_shift_matrix,
    wilson_ci,
)
from xai_audit.contract.types import HypothesisContext, HypothesisResult, Options, Sample
from xai_audit.errors import DataError

#: an intervention: a chunk of display-space images (N, 3, H, W) and their samples -> changed copies
Transform = Callable[[np.ndarray, Sequence[Sample]], np.ndarray]

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(1, 3, 1, 1)
#: images per chunk: the intervention and the forward pass run chunk by chunk
CHUNK = 256
#: example pairs (clean, changed) drawn in the report
N_EXAMPLES = 4
#: largest side of an example image kept for the report
EXAMPLE_SIDE = 96


class InterventionOptions(Options):
    """Options every intervention hypothesis shares."""

    min_effect: float = Field(
        0.0, ge=0, le=1, description="smallest accuracy drop (or flip rate) worth reporting: the interval must clear it"
    )
    min_shift: float = Field(
        0.05, ge=0, le=1, description="smallest gain in one class's share of predictions that counts as a shortcut"
    )
    min_concentration: float = Field(
        2 / 3, ge=0, le=1,
        description="share of the changed predictions one class must receive to call it a shortcut rather than fragility",
    )
    sample: int | None = Field(
        None, ge=1, description="test on at most this many of the audited samples (a seeded random subset)"
    )


def subsample(context: HypothesisContext, sample: int | None) -> HypothesisContext:
    """The context restricted to a seeded random subset of ``sample`` samples (all when None or more)."""
    n = len(context.samples)
    if sample is None or sample >= n:
        return context
    keep = np.sort(np.random.default_rng(context.seed).choice(n, size=sample, replace=False))
    return dataclasses.replace(context, samples=[context.samples[int(i)] for i in keep], probs=context.probs[keep])


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) RGB -> luminance repeated on three channels."""
    luma = (images * LUMA).sum(axis=1, keepdims=True)
    return np.repeat(luma, 3, axis=1).astype(np.float32)


def region_masks(samples: Sequence[Sample], name: str, plugin: str) -> np.ndarray:
    """Boolean masks (N, H, W) of region ``name``; a clear error when the samples have none."""
    if not samples:
        return np.zeros((0, 0, 0), bool)
    missing = next((s for s in samples if not s.regions), None)
    if missing is not None:
        raise DataError(
            f"{plugin} needs region masks, and sample {missing.id!r} has none: use a data set with masks "
            "or add a region source to the plan (regions: {source: ...})"
        )
    if name not in samples[0].regions:
        raise DataError(f"{plugin}: no region {name!r}; the samples have {sorted(samples[0].regions)}")
    return np.stack([np.asarray(s.regions[name], bool) for s in samples])


@dataclass
class InterventionRun:
    """Predictions before and after an intervention, and a few changed images to show."""

    before: np.ndarray
    after: np.ndarray
    example_index: np.ndarray
    example_after: np.ndarray
    #: whether the changed images reach the model as a different input than the clean ones (False: for no
    #: image; None: the adapter cannot say, see ``ModelAdapter.model_input``)
    reaches_model: bool | None = None


def apply_and_predict(context: HypothesisContext, transform: Transform, *, what: str) -> InterventionRun:
    """Run ``transform`` chunk by chunk and predict on the changed images."""
    samples = list(context.samples)
    n = len(samples)
    out = []
    # examples: a spread of samples, so the figure shows several classes
    example_index = np.unique(np.linspace(0, max(n - 1, 0), num=min(N_EXAMPLES, n)).astype(int)) if n else np.zeros(0, int)
    example_after: list[np.ndarray] = []
    reaches: bool | None = None
    for start in range(0, n, CHUNK):
        chunk = samples[start : start + CHUNK]
        images = np.stack([s.image for s in chunk]).astype(np.float32)
        changed = np.asarray(transform(images, chunk), dtype=np.float32)
        if changed.shape != images.shape:
            raise ValueError(f"the intervention ({what}) returned shape {changed.shape} for images of shape {images.shape}")
        if not np.all(np.isfinite(changed)):
            raise ValueError(f"the intervention ({what}) returned NaN or infinite pixels")
        changed = np.clip(changed, 0.0, 1.0)
        if reaches is not True:
            same = same_model_input(context.model, images, changed)
            reaches = reaches if same is None else (not same)
        out.append(context.predict(changed))
        for i in example_index[(example_index >= start) & (example_index < start + len(chunk))]:
            example_after.append(shrink_for_report(changed[i - start]))
    after = np.concatenate(out) if out else np.zeros_like(context.probs)
    return InterventionRun(
        before=np.asarray(context.probs), after=after, example_index=example_index,
        example_after=np.stack(example_after) if example_after else np.zeros((0, 3, 1, 1), np.float32),
        reaches_model=reaches,
    )


def same_model_input(model: Any, images: np.ndarray, changed: np.ndarray) -> bool | None:
    """True when ``changed`` reaches the model as the same input as ``images`` (to float rounding), None when
    the adapter cannot say what its model receives."""
    import torch

    try:
        with torch.no_grad():
            clean = model.model_input(torch.as_tensor(images, device=model.device))
            if clean is None:
                return None
            after = model.model_input(torch.as_tensor(changed, device=model.device))
        clean, after = torch.as_tensor(clean).float(), torch.as_tensor(after).float()
    except Exception:  # an adapter whose preprocess is not a torch step: it cannot say
        return None
    if clean.shape != after.shape:
        return False
    scale = max(1.0, float(clean.abs().max())) if clean.numel() else 1.0
    return bool((clean - after).abs().max() <= 1e-4 * scale) if clean.numel() else True


def not_applicable_reason(model: Any, what: str, n: int) -> str:
    """Why an intervention that does not reach the model's input is not applicable, in one sentence."""
    why = f"when {what}, the model receives exactly the input it receives for the clean images (all {n} of them)"
    if getattr(model, "input_channels", None) == 1:
        why += ("; the model takes one channel, the luminance of the display image (0.299 R + 0.587 G + 0.114 B), "
                "and this change leaves that channel as it was")
    return why


def shrink_for_report(image: np.ndarray) -> np.ndarray:
    """``image`` (C, H, W) subsampled so its larger side is at most EXAMPLE_SIDE: an example the report draws."""
    step = max(1, int(np.ceil(max(image.shape[-2:]) / EXAMPLE_SIDE)))
    return np.ascontiguousarray(image[:, ::step, ::step], dtype=np.float32)


def intervention_result(
    context: HypothesisContext,
    transform: Transform,
    *,
    what: str,
    options: InterventionOptions,
    preserves_label: bool = True,
    kind: str | None = None,
) -> HypothesisResult:
    """Test whether ``transform`` (described by ``what``, e.g. "the images are shown in grayscale") hurts the model.

    ``preserves_label`` says the intervention should not change the true
    class (darkening a face does not change its expression); only then is a
    drain of predictions into one class read as a shortcut. ``kind`` names the
    primary claim ("fragility" by default; "reliance" where the intervention
    removes what carries the label, e.g. occluding the mouth of an expression).
    """
    context = subsample(context, options.sample)
    run = apply_and_predict(context, transform, what=what)
    return compare(context, run, what=what, options=options, preserves_label=preserves_label, kind=kind)


def compare(
    context: HypothesisContext,
    run: InterventionRun,
    *,
    what: str,
    options: InterventionOptions,
    preserves_label: bool = True,
    kind: str | None = None,
) -> HypothesisResult:
    """The statistics, tables and figures of one intervention, from its predictions."""
    classes = list(context.classes)
    pred_before = run.before.argmax(axis=1)
    pred_after = run.after.argmax(axis=1)
    n = len(pred_before)
    labels = context.labels
    kind = kind or ("fragility" if preserves_label else "reliance")
    if run.reaches_model is False and n:
        why = not_applicable_reason(context.model, what, n)
        return HypothesisResult(
            claim=(f"The model's predictions change when {what}." if labels is None
                   else f"The model's accuracy drops when {what}."),
            metric="flip rate (share of predictions that change)" if labels is None else "accuracy",
            before=None, after=None, effect=None, ci=None, p_value=None,
            verdict="not applicable",
            n=n,
            test=f"not tested: {why}",
            details={"reason": f"Not applicable: {why}.", "preserves_label": preserves_label},
            kind=kind,
            per_sample=_per_sample(context, pred_after),
        )
    flips = pred_before != pred_after
    shift = _shift_table(pred_before, pred_after, classes)
    matrix = prediction_shift_matrix(pred_before, pred_after, len(classes))
    confidence = _confidence(run, pred_before, context.seed)
    details: dict[str, Any] = {
        "flip_rate": float(flips.mean()) if n else 0.0,
        "flip_rate_ci": list(wilson_ci(int(flips.sum()), n) or ()) or None,
        **confidence,
        "min_effect": options.min_effect,
        "preserves_label": preserves_label,
    }
    gain = class_gain_test(pred_before, pred_after, len(classes), seed=context.seed)
    tests = []
    if preserves_label:
        tests.append(_shortcut_test(gain, classes, what, options, n))
    else:
        top = classes[gain["class_index"]]
        details["largest_gain"] = f"'{top}' {100 * gain['gain']:+.1f} pp (descriptive: the intervention may change the label)"
    examples = [context.samples[i].id for i in np.flatnonzero(flips)[:8]]
    figures, arrays = _figures(context, run, matrix, shift, classes, what, pred_before, pred_after)

    if labels is None:
        agree = ~flips
        p_value, b, _ = mcnemar_exact(np.ones(n, bool), agree)
        ci = wilson_ci(int(flips.sum()), n)
        supported = n > 0 and p_value < ALPHA and ci is not None and ci[0] > options.min_effect
        details["changed_predictions"] = b
        return HypothesisResult(
            claim=f"The model's predictions change when {what}.",
            metric="flip rate (share of predictions that change)",
            before=0.0,
            after=float(flips.mean()) if n else 0.0,
            effect=float(flips.mean()) if n else 0.0,
            ci=ci,
            p_value=p_value,
            verdict="supported" if supported else "not supported",
            n=n,
            test="no labels: exact McNemar test against the model's own clean predictions; "
            "95 % Wilson interval of the flip rate",
            breakdown={"prediction shift": shift},
            examples=examples,
            details=details,
            figures=figures,
            arrays=arrays,
            kind=kind,
            tests=tests,
            per_sample=_per_sample(context, pred_after),
        )

    correct_before = pred_before == labels
    correct_after = pred_after == labels
    p_value, b, c = mcnemar_exact(correct_before, correct_after)
    drop = float(correct_before.mean() - correct_after.mean()) if n else 0.0
    ci = bootstrap_paired_diff_ci(correct_before, correct_after, seed=context.seed) if n else None
    supported = n > 0 and p_value < ALPHA and drop > 0 and ci is not None and ci[0] > options.min_effect
    details.update({"correct_then_wrong": b, "wrong_then_correct": c})
    return HypothesisResult(
        claim=f"The model's accuracy drops when {what}.",
        metric="accuracy",
        before=float(correct_before.mean()) if n else None,
        after=float(correct_after.mean()) if n else None,
        effect=drop,
        ci=ci,
        p_value=p_value,
        verdict="supported" if supported else "not supported",
        n=n,
        test="exact McNemar test on paired correct/incorrect outcomes; 95 % paired bootstrap interval of the drop",
        breakdown={"per class": _per_class(labels, correct_before, correct_after, classes), "prediction shift": shift},
        examples=examples,
        details=details,
        figures=figures,
        arrays=arrays,
        kind=kind,
        tests=tests,
        per_sample=_per_sample(context, pred_after),
    )


def _per_sample(context: HypothesisContext, pred_after: np.ndarray) -> dict[str, list[Any]]:
    return {"ids": [s.id for s in context.samples], "predictions_after": [int(p) for p in pred_after]}


def _shortcut_test(gain: dict, classes: list[str], what: str, options: InterventionOptions, n: int) -> dict[str, Any]:
    name = classes[gain["class_index"]]
    lo, hi = gain["ci"]
    concentration = gain["concentration"]
    supported = (
        gain["p_value"] < ALPHA
        and gain["gain"] > 0
        and lo > options.min_shift
        and concentration >= options.min_concentration
    )
    if supported:
        reading = f"'{name}' receives {100 * concentration:.0f} % of the changed predictions: a shortcut"
    elif gain["changed"] == 0:
        reading = "no prediction changed"
    elif concentration < options.min_concentration:
        reading = (
            f"the changed predictions spread: the largest share, {100 * concentration:.0f} %, goes to '{name}' "
            f"(a shortcut needs {100 * options.min_concentration:.0f} %)"
        )
    else:
        reading = f"the gain of '{name}' is not clearly above {100 * options.min_shift:.0f} pp"
    conc_ci = gain["concentration_ci"]
    return {
        "name": "shortcut",
        "kind": "shortcut",
        "explains": "",
        "claim": f"Predictions drain into '{name}' when {what}.",
        "metric": f"share of predictions '{name}'",
        "before": gain["share_before"],
        "after": gain["share_after"],
        "effect": gain["gain"],
        "ci": list(gain["ci"]),
        "p_value": gain["p_value"],
        "verdict": "supported" if supported else "not supported",
        "n": n,
        "test": (
            f"exact McNemar test on paired 'predicted {name}' before/after, Bonferroni over the {len(classes)} "
            f"classes (the class with the largest gain is tested); simultaneous "
            f"{100 * gain['ci_confidence']:.1f} % paired bootstrap interval of the gain"
        ),
        "details": {
            "class": name,
            "moved_in": gain["moved_in"],
            "moved_out": gain["moved_out"],
            "changed": gain["changed"],
            "concentration": concentration,
            "concentration_ci": list(conc_ci) if conc_ci else None,
            "min_shift": options.min_shift,
            "min_concentration": options.min_concentration,
            "reading": reading,
            "gain_by_class": {c: g for c, g in zip(classes, gain["gains"])},
        },
    }


def _shift_table(pred_before: np.ndarray, pred_after: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    n = max(len(pred_before), 1)
    rows = []
    for k, name in enumerate(classes):
        before = float(np.sum(pred_before == k)) / n
        after = float(np.sum(pred_after == k)) / n
        rows.append({
            "class": name,
            "share before": before,
            "share after": after,
            "change": after - before,
            "moved in": int(np.sum((pred_before != k) & (pred_after == k))),
            "moved out": int(np.sum((pred_before == k) & (pred_after != k))),
        })
    return rows


def _per_class(labels, correct_before, correct_after, classes) -> list[dict[str, Any]]:
    rows = []
    for k, name in enumerate(classes):
        mask = labels == k
        if mask.any():
            rows.append({
                "class": name,
                "n": int(mask.sum()),
                "recall before": float(correct_before[mask].mean()),
                "recall after": float(correct_after[mask].mean()),
            })
    return rows


def _confidence(run: InterventionRun, pred_before: np.ndarray, seed: int) -> dict[str, Any]:
    """How confidence moves: top probability before and after, and the clean prediction's probability after."""
    n = len(pred_before)
    if n == 0:
        return {"mean_confidence_before": None, "mean_confidence_after": None}
    top_before = run.before.max(axis=1)
    top_after = run.after.max(axis=1)
    kept = run.after[np.arange(n), pred_before]
    drop_ci = bootstrap_paired_diff_ci(top_before, kept, seed=seed)
    return {
        "mean_confidence_before": float(top_before.mean()),
        "mean_confidence_after": float(top_after.mean()),
        "clean_class_probability_after": float(kept.mean()),
        "clean_class_probability_drop_ci": list(drop_ci),
    }


def _figures(context, run: InterventionRun, matrix, shift, classes, what, pred_before, pred_after):
    n_changed = int(np.sum(pred_before != pred_after))
    figures: list[dict[str, Any]] = [
        {
            "kind": "matrix",
            "title": "Where the predictions go",
            "values": matrix.tolist(),
            "rows": list(classes),
            "cols": list(classes),
            "row_label": "predicted on the clean image",
            "col_label": "predicted after",
            "format": "{:.0f}",
            "caption": (
                f"Prediction shift when {what}: each row is the class predicted on the clean image, each column "
                f"the class predicted after; off-diagonal counts are the {n_changed} changed predictions. "
                "A column that collects most of them is a class the intervention drains into (a shortcut); "
                "counts spread over many columns are plain fragility."
            ),
            "alt": "Matrix of counts: clean prediction by prediction after the intervention.",
        },
        {
            "kind": "bars",
            "title": "Share of predictions per class, before and after",
            "labels": list(classes),
            "series": [
                {"label": "clean", "values": [row["share before"] for row in shift]},
                {"label": "after", "values": [row["share after"] for row in shift]},
            ],
            "ylabel": "share of predictions",
            "caption": f"Share of predictions per class on the clean images and when {what}.",
            "alt": "Bar chart of the share of predictions per class on clean images and after the intervention.",
        },
    ]
    arrays: dict[str, np.ndarray] = {}
    if len(run.example_index):
        pairs, titles = [], []
        for j, i in enumerate(run.example_index):
            sample = context.samples[int(i)]
            pairs += [shrink_for_report(sample.image), run.example_after[j]]
            titles += [f"{sample.id}\n{classes[pred_before[i]]}", f"after\n{classes[pred_after[i]]}"]
        arrays["examples"] = np.stack(pairs).astype(np.float32)
        figures.append({
            "kind": "images",
            "title": "",
            "images": {"array": "examples"},
            "titles": titles,
            "columns": min(8, len(pairs)),
            "caption": f"Examples: each clean image with its prediction, then the same image when {what}.",
            "alt": "Pairs of images: clean and after the intervention, with the model's prediction for each.",
        })
    return figures, arrays
