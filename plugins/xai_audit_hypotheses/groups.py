"""group-accuracy: whom does the model fail? Accuracy, recall and fairness gaps per group.

Groups come from the data set's columns (``by``), and their intersection when
there are several; with no column at all, from a skin-tone estimate (the
individual typology angle of skin pixels), labelled as an estimate.

The test for each column (and for the intersection) is a permutation test of
the gap between the best and the worst group, with a bootstrap interval of
that gap; every one is counted in the audit's Holm correction. Groups smaller
than ``min_group_size`` are shown but not judged, with a warning. The verdict
also needs the gap's interval to clear ``min_gap``: a gap too small to matter
is not a finding however certain it is. Fairness gaps (equalized odds and
demographic parity differences, one-vs-rest per class, the largest reported)
come from fairlearn.

"No difference between groups" is never read from a gap that is not
significant: for each column, every group large enough to judge is tested
against the other judged groups together by two one-sided tests (TOST) of the
accuracy difference against ±``equivalence_margin`` (default 5 points), with
the power of that test at the observed sizes. Only when every group passes
may the report say the groups are equivalent within the margin; otherwise it
says the data cannot tell (``details.equivalence``, and a
``"<column>: equivalence"`` table of the per-group tests). An equivalence claim
over several groups holds when each of its tests does (an intersection-union
test), so no multiplicity correction is needed.

Without labels, the test is whether the predicted classes are distributed
alike in every group (demographic parity): a chi-square test, with the
largest per-class difference in prediction share as the effect.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from xai_audit.api import (
    ALPHA,
    DEFAULT_TARGET_WIDTH,
    EQUIVALENCE_METHOD,
    DataError,
    HypothesisContext,
    HypothesisPlugin,
    HypothesisResult,
    Options,
    bootstrap_gap_ci,
    chi2_independence,
    equivalence_test,
    permutation_gap_test,
    recommendation,
    samples_for_ci_width,
    two_proportion_test,
    wilson_ci,
)
from xai_audit_hypotheses import skin_tone

#: the value of ``by`` that asks for the skin-tone estimate
ESTIMATE = "skin_tone_estimate"
#: names in ``by`` that mean the skin-tone estimate when the data has no column of that name (README: by: [skin_tone])
ESTIMATE_NAMES = (ESTIMATE, "skin_tone", "skin tone", "skin-tone", "ita")
NO_COLOUR = ("the {n} audited images have no colour (every pixel is grey), so skin tone cannot be estimated from "
             "them; give the groups as a column of the data's metadata (by: [column])")
JOIN = " × "


class GroupAccuracyOptions(Options):
    by: list[str] | None = Field(
        None,
        description="group columns; default: every group column of the data set, or the skin-tone estimate when it "
        f"has none ('{ESTIMATE}', or 'skin_tone' where the data has no such column, asks for the estimate)",
    )
    intersections: bool = Field(True, description="also test the intersection of the columns (when there are several)")
    min_group_size: int = Field(30, ge=1, description="groups smaller than this are shown but not judged")
    fairness: bool = Field(True, description="also report equalized odds and demographic parity differences")
    min_gap: float = Field(0.03, ge=0, le=1, description="smallest accuracy gap worth reporting: the interval must clear it")
    equivalence_margin: float = Field(
        0.05, gt=0, lt=1,
        description="groups are called equivalent only when two one-sided tests put each group's accuracy within "
        "± this of the other groups' (TOST); otherwise the report says the data cannot tell",
    )
    target_ci_width: float = Field(
        0.06, gt=0, le=1,
        description="for recommendations: the 95 % interval width a group's accuracy should reach "
        "(twice min_gap: narrow enough to tell a gap of min_gap from none)",
    )


class GroupAccuracyHypothesis(HypothesisPlugin):
    name = "group-accuracy"
    description = "Is the model equally accurate for every group? Per-group accuracy and recall, gaps, fairness, tests."
    Options = GroupAccuracyOptions

    def recommend(self, finding, result):
        """Bias: more labelled images of the worst group, as many as pin its accuracy to the target interval.
        Without a finding: the same for every group too small to judge."""
        if finding is None:
            return _too_small_rows(result)
        return _group_rows(finding, result) if finding.get("kind") == "bias" else []

    def check_data(self, data):
        """A ``by`` column the data lacks (and that is no name of the skin-tone estimate) is refused before the run."""
        problem = _missing_column(self.options.by or [], list(data.group_columns))
        return f"by: {problem}" if problem else None

    def test(self, context: HypothesisContext) -> HypothesisResult:
        opts: GroupAccuracyOptions = self.options
        columns, values, notes = _group_columns(context, opts)
        if not columns:  # only the skin-tone estimate was asked for, and the images have no colour
            why = NO_COLOUR.format(n=len(context.samples))
            return HypothesisResult(
                claim=f"The model's predictions differ between {skin_tone.COLUMN} groups.",
                metric="groups", before=None, after=None, effect=None, ci=None, p_value=None,
                verdict="not applicable", n=len(context.samples), test=f"not tested: {why}",
                details={"reason": f"Not applicable: {why}."}, kind="bias",
            )
        labels = context.labels
        preds = context.probs.argmax(axis=1)
        analyses = {c: _analyse(c, values[c], preds, labels, context, opts) for c in columns}
        main = max(analyses, key=lambda c: (analyses[c]["verdict"] == "supported", analyses[c]["effect"]))
        primary = analyses[main]
        tests = [_as_test(c, a) for c, a in analyses.items() if c != main]
        breakdown: dict[str, list[dict[str, Any]]] = {}
        for column, a in analyses.items():
            breakdown[column] = a["rows"]
            if a.get("recall_rows"):
                breakdown[f"{column}: recall per class"] = a["recall_rows"]
            if a.get("equivalence_rows"):
                breakdown[f"{column}: equivalence"] = a["equivalence_rows"]
        breakdown["fairness gaps"] = [a["fairness"] for a in analyses.values() if a.get("fairness")]
        if not breakdown["fairness gaps"]:
            del breakdown["fairness gaps"]
        warnings = list(notes)
        for column, a in analyses.items():
            if a["too_small"]:
                warnings.append(
                    f"{column}: {', '.join(f'{g} (n = {n})' for g, n in a['too_small'])} "
                    f"{'is' if len(a['too_small']) == 1 else 'are'} below {opts.min_group_size} samples: "
                    "shown, but too small to judge"
                )
        details = {
            "column": main,
            "best": primary["best"],
            "worst": primary["worst"],
            "min_group_size": opts.min_group_size,
            "min_gap": opts.min_gap,
            "target_ci_width": opts.target_ci_width,
            # group columns that are an estimate from the images, not the data's own (the report says so)
            "estimated_columns": [c for c in columns if c == skin_tone.COLUMN],
            **primary["details"],
        }
        return HypothesisResult(
            claim=primary["claim"],
            metric=primary["metric"],
            before=primary["before"],
            after=primary["after"],
            effect=primary["effect"],
            ci=primary["ci"],
            p_value=primary["p_value"],
            verdict=primary["verdict"],
            n=len(preds),
            test=primary["test"],
            breakdown=breakdown,
            details=details,
            kind="bias",
            tests=tests,
            warnings=warnings,
        )


def _group_columns(context: HypothesisContext, opts: GroupAccuracyOptions):
    """The columns to analyse and each sample's value in each."""
    available = sorted({k for s in context.samples for k in s.groups})
    notes: list[str] = []
    wanted = list(opts.by) if opts.by else (available or [ESTIMATE])
    problem = _missing_column(wanted, available)
    if problem:
        raise DataError(f"group-accuracy: {problem}")
    # a skin-tone name with no such column asks for the estimate (once, however many of its names are given)
    wanted = list(dict.fromkeys(ESTIMATE if c not in available and c in ESTIMATE_NAMES else c for c in wanted))
    values: dict[str, np.ndarray] = {}
    columns: list[str] = []
    for column in wanted:
        if column == ESTIMATE:
            if all(_grey(s.image) for s in context.samples):
                notes.append(f"'{skin_tone.COLUMN}' left out: " + NO_COLOUR.format(n=len(context.samples)) + ".")
                continue
            estimated, sources = skin_tone.estimate(context.samples)
            values[skin_tone.COLUMN] = np.array(estimated)
            columns.append(skin_tone.COLUMN)
            notes.append(
                f"'{skin_tone.COLUMN}' is an estimate from image colour (individual typology angle of "
                f"skin pixels: {', '.join(f'{n} from the {s}' for s, n in sources.items())}), "
                "not a person's skin type; lighting shifts it."
            )
        else:
            values[column] = np.array([str(s.groups.get(column, "")) for s in context.samples])
            columns.append(column)
    if opts.intersections and len(columns) > 1:
        joined = JOIN.join(columns)
        values[joined] = np.array(["; ".join(parts) for parts in zip(*(values[c] for c in columns))])
        columns.append(joined)
    return columns, values, notes


def _missing_column(wanted: list[str], available: list[str]) -> str | None:
    """Why ``wanted`` names a group column the data lacks (a skin-tone name is the estimate then), or None."""
    missing = [c for c in wanted if c not in available and c not in ESTIMATE_NAMES]
    if not missing:
        return None
    return (f"no group column {missing[0]!r}; the data set has {available or 'none'} "
            f"('{ESTIMATE}' or 'skin_tone' asks for the skin-tone estimate from the images)")


def _grey(image: np.ndarray) -> bool:
    """True when every pixel of a display image (3, H, W) has R = G = B (to 8-bit rounding)."""
    image = np.asarray(image, np.float32)
    return bool(np.abs(image[0] - image[1]).max() < 1e-3 and np.abs(image[1] - image[2]).max() < 1e-3)


def _analyse(column, values, preds, labels, context, opts) -> dict[str, Any]:
    groups = sorted(set(values.tolist()))
    sizes = {g: int(np.sum(values == g)) for g in groups}
    too_small = [(g, sizes[g]) for g in groups if sizes[g] < opts.min_group_size]
    judged = [g for g in groups if sizes[g] >= opts.min_group_size]
    if labels is None:
        return _analyse_predictions(column, values, preds, context, opts, groups, sizes, too_small, judged)
    correct = preds == labels
    rows, recall_rows = [], []
    for g in groups:
        mask = values == g
        k = int(correct[mask].sum())
        ci = wilson_ci(k, sizes[g])
        rest = ~mask
        p_rest = two_proportion_test(k, sizes[g], int(correct[rest].sum()), int(rest.sum())) if rest.any() else None
        acc = k / sizes[g]
        rows.append({
            "group": g, "n": sizes[g], "accuracy": acc, "ci": list(ci) if ci else None,
            "vs rest p (unadjusted)": p_rest,
            "too small": sizes[g] < opts.min_group_size,
            "n for target width": samples_for_ci_width(acc, opts.target_ci_width),
        })
        recall = {"group": g, "n": sizes[g]}
        for c, name in enumerate(context.classes):
            in_class = mask & (labels == c)
            recall[name] = float(correct[in_class].mean()) if in_class.any() else None
        recall_rows.append(recall)
    fairness = _fairness(column, values, preds, labels, context.classes, judged) if opts.fairness else None
    base = {"rows": rows, "recall_rows": recall_rows, "too_small": too_small, "fairness": fairness}
    if len(judged) < 2:
        return {**base, **_inconclusive(column, judged, "fewer than two groups large enough to judge", True)}
    equivalence, base["equivalence_rows"] = _equivalence(column, values, correct, judged, opts.equivalence_margin)
    acc = {r["group"]: r["accuracy"] for r in rows}
    best = max(judged, key=lambda g: acc[g])
    worst = min(judged, key=lambda g: acc[g])
    mask = np.isin(values, judged)
    gap, p_value = permutation_gap_test(correct[mask], values[mask], seed=context.seed)
    ci = bootstrap_gap_ci(correct, values, best, worst, seed=context.seed)
    supported = p_value < ALPHA and ci[0] > opts.min_gap
    return {
        **base,
        "claim": (
            f"The model is less accurate for {column} {worst} ({100 * acc[worst]:.1f} %) than for "
            f"{best} ({100 * acc[best]:.1f} %)."
        ),
        "metric": "accuracy gap (best group - worst group)",
        "before": acc[best], "after": acc[worst], "effect": float(gap), "ci": ci, "p_value": p_value,
        "verdict": "supported" if supported else "not supported",
        "best": best, "worst": worst,
        "test": (
            "permutation test of the gap between the best and the worst group (group membership shuffled, "
            "so choosing them after looking is part of the null); 95 % bootstrap interval of the gap, "
            "each group resampled alone"
        ),
        "details": {
            "accuracy_best": acc[best], "accuracy_worst": acc[worst],
            "n_best": sizes[best], "n_worst": sizes[worst],
            "judged_groups": len(judged),
            "equivalence": equivalence,
        },
    }


def _equivalence(column, values, correct, judged, margin) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """TOST of each judged group's accuracy against the other judged groups' together, within ±margin.

    The column's groups are equivalent when every group's test is (an intersection-union test: no correction);
    ``power`` is the smallest of the groups' powers, ``p_value`` the largest TOST p-value."""
    rows = []
    for g in judged:
        mine, rest = values == g, np.isin(values, judged) & (values != g)
        k1, n1, k2, n2 = int(correct[mine].sum()), int(mine.sum()), int(correct[rest].sum()), int(rest.sum())
        tost = equivalence_test(k1, n1, k2, n2, margin)
        rows.append({"group": g, "n": n1, "n rest": n2, "accuracy": k1 / n1, "accuracy rest": k2 / n2,
                     "difference": tost["difference"], "90 % ci": tost["ci"], "tost p": tost["p_value"],
                     "power": tost["power"], "equivalent": tost["equivalent"]})
    equivalent = all(r["equivalent"] for r in rows)
    p_value, power = max(r["tost p"] for r in rows), min(r["power"] for r in rows)
    points = f"{100 * margin:g} points"
    stats = f"TOST p = {_p(p_value)}, power {power:.2f}"
    if equivalent:
        reading = (f"The {column} groups are equivalent in accuracy within ±{points} ({stats}): each group against "
                   "the others.")
    else:
        weakest = max(rows, key=lambda r: r["tost p"])
        reading = (f"The data cannot tell whether the {column} groups are equally accurate: equivalence within "
                   f"±{points} is not shown ({stats}; weakest: {weakest['group']}, n = {weakest['n']})"
                   + ("; the test has too little power at these group sizes." if power < 0.8 else "."))
    return {
        "margin": margin, "comparison": "each judged group against the other judged groups together",
        "equivalent": equivalent, "p_value": p_value, "power": power, "method": EQUIVALENCE_METHOD,
        "reading": reading,
    }, rows


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _inconclusive(column, judged, why, labelled: bool) -> dict[str, Any]:
    return {
        "claim": (f"The model's accuracy differs between {column} groups." if labelled else
                  f"The model's predictions are distributed differently between {column} groups "
                  "(no labels: prediction shares)."),
        "metric": ("accuracy gap (best group - worst group)" if labelled else
                   "largest difference in a class's share of predictions between groups"),
        "before": None, "after": None, "effect": None, "ci": None, "p_value": None,
        "verdict": "inconclusive", "best": judged[0] if judged else None, "worst": judged[0] if judged else None,
        "test": f"not tested: {why}", "details": {"judged_groups": len(judged)},
    }


def _analyse_predictions(column, values, preds, context, opts, groups, sizes, too_small, judged) -> dict[str, Any]:
    """No labels: are predicted classes distributed alike in every group?"""
    k = len(context.classes)
    rows = []
    share = {}
    for g in groups:
        counts = np.bincount(preds[values == g], minlength=k) / sizes[g]
        share[g] = counts
        rows.append({"group": g, "n": sizes[g], **{f"share {c}": float(counts[j]) for j, c in enumerate(context.classes)},
                     "too small": sizes[g] < opts.min_group_size})
    base = {"rows": rows, "recall_rows": [], "too_small": too_small, "fairness": None}
    if len(judged) < 2:
        return {**base, **_inconclusive(column, judged, "fewer than two groups large enough to judge", False)}
    table = np.array([share[g] for g in judged])
    spread = table.max(axis=0) - table.min(axis=0)
    c = int(np.argmax(spread))
    hi, lo = judged[int(np.argmax(table[:, c]))], judged[int(np.argmin(table[:, c]))]
    mask = np.isin(values, judged)
    p_value = chi2_independence(values[mask], preds[mask])
    rng = np.random.default_rng(context.seed)
    a, b = (preds == c)[values == hi], (preds == c)[values == lo]
    diffs = [a[rng.integers(0, len(a), len(a))].mean() - b[rng.integers(0, len(b), len(b))].mean() for _ in range(2000)]
    ci = (float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5)))
    supported = p_value < ALPHA and ci[0] > opts.min_gap
    name = context.classes[c]
    if hi == lo:  # every group gets every class equally often: no class to name
        lo = next(g for g in judged if g != hi)
    claim = (f"The model predicts '{name}' more often for {column} {hi} than for {lo} (no labels: demographic parity)."
             if spread[c] > 0 else
             f"The model's predictions are distributed differently between {column} groups (no labels: demographic "
             "parity; here every group gets each class equally often).")
    return {
        **base,
        "claim": claim,
        "metric": f"difference in share of '{name}' predictions",
        "before": float(table[:, c].max()), "after": float(table[:, c].min()), "effect": float(spread[c]), "ci": ci,
        "p_value": p_value, "verdict": "supported" if supported else "not supported", "best": hi, "worst": lo,
        "test": "no labels: chi-square test of predicted class by group; 95 % bootstrap interval of the largest "
        "per-class share difference",
        "details": {"class": name},
    }


def _fairness(column, values, preds, labels, classes, judged) -> dict[str, Any] | None:
    """Equalized odds and demographic parity differences (fairlearn), one-vs-rest, largest over classes."""
    if len(judged) < 2:
        return None
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    mask = np.isin(values, judged)
    eo, dp = [], []
    for k in range(len(classes)):
        y_true, y_pred = (labels[mask] == k).astype(int), (preds[mask] == k).astype(int)
        if y_true.min() == y_true.max():
            continue
        eo.append((float(equalized_odds_difference(y_true, y_pred, sensitive_features=values[mask])), classes[k]))
        dp.append((float(demographic_parity_difference(y_true, y_pred, sensitive_features=values[mask])), classes[k]))
    if not eo:
        return None
    worst_eo, worst_dp = max(eo), max(dp)
    return {
        "groups": column,
        "equalized odds difference": worst_eo[0], "eo class": worst_eo[1],
        "demographic parity difference": worst_dp[0], "dp class": worst_dp[1],
    }


def _as_test(column: str, a: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": f"gap by {column}", "kind": "bias", "claim": a["claim"], "metric": a["metric"],
        "before": a["before"], "after": a["after"], "effect": a["effect"],
        "ci": list(a["ci"]) if a["ci"] is not None else None, "p_value": a["p_value"], "verdict": a["verdict"],
        "n": int(sum(r["n"] for r in a["rows"])), "test": a["test"],
        "details": {"column": column, "best": a["best"], "worst": a["worst"], **a["details"]},
    }


# --------------------------------------------------------------------------- recommended data


def _group_rows(finding: dict[str, Any], entry: dict[str, Any]) -> list[dict[str, Any]]:
    group = finding.get("group") or {}
    column = group.get("column")
    rows_by_group = {str(r.get("group")): r for r in (entry.get("breakdown") or {}).get(column, [])
                     if isinstance(r, dict)}
    if not rows_by_group:
        return []
    target = float((entry.get("details") or {}).get("target_ci_width", DEFAULT_TARGET_WIDTH))
    if not any("accuracy" in r for r in rows_by_group.values()):  # no labels: prediction shares differ
        needed = samples_for_ci_width(0.5, target)
        worst = str(group.get("worst"))
        count = max(needed - int(rows_by_group.get(worst, {}).get("n", 0)), 0)
        return [recommendation(
            "add-group", kind="bias", group=f"{column}={worst}", count=count,
            reason=(
                f"Bias, seen without labels: {finding.get('title')} Label images of {column} {group.get('best')} "
                f"and {worst} (at least {needed} of each) to learn whether the difference is the model's mistake: "
                "without labels the audit sees only that the predictions differ."
            ),
            finding=finding.get("source", ""),
        )]
    best = rows_by_group.get(str(group.get("best")), {})
    best_acc = best.get("accuracy")
    out = []
    for value, row in sorted(rows_by_group.items(), key=lambda kv: kv[1].get("accuracy", 1.0)):
        ci = row.get("ci")
        if value != str(group.get("worst")):
            continue
        needed = samples_for_ci_width(row.get("accuracy", 0.5), target)
        count = max(needed - int(row.get("n", 0)), 0)
        out.append(recommendation(
            "add-group", kind="bias", group=f"{column}={value}", count=count,
            reason=(
                f"Bias: accuracy for {column} {value} is {_pct(row.get('accuracy'))} {_ci(ci)} against "
                f"{_pct(best_acc)} for {group.get('best')}. Add labelled images of this group to the fine-tuning "
                f"data, at least {count} more: with {needed} in all, a re-audit pins its accuracy to a 95 % "
                f"interval {100 * target:.0f} pp wide."
                if count else
                f"Bias: accuracy for {column} {value} is {_pct(row.get('accuracy'))} {_ci(ci)} against "
                f"{_pct(best_acc)} for {group.get('best')}. Add labelled images of this group to the fine-tuning "
                f"data; the audit already has enough ({row.get('n')}) to pin its accuracy to a 95 % interval "
                f"{100 * target:.0f} pp wide."
            ),
            finding=finding.get("source", ""),
        ))
    return out


def _too_small_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    details = entry.get("details") or {}
    target = float(details.get("target_ci_width", DEFAULT_TARGET_WIDTH))
    for column, rows in (entry.get("breakdown") or {}).items():
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict) or not row.get("too small"):
                continue
            needed = samples_for_ci_width(row.get("accuracy", 0.5) if row.get("accuracy") is not None else 0.5, target)
            count = max(needed - int(row.get("n", 0)), 0)
            measured = ("labelled images", "its accuracy") if "accuracy" in row else (
                "images", "the share of each class among its predictions")
            out.append(recommendation(
                "add-group", kind="too small", group=f"{column}={row.get('group')}", count=count,
                reason=(
                    f"Too small to judge: {column} {row.get('group')} has {row.get('n')} audited images "
                    f"(fewer than {details.get('min_group_size')}). {count} more {measured[0]} (to {needed}) "
                    f"give {measured[1]} a 95 % interval {100 * target:.0f} pp wide."
                ),
                finding="",  # the host names this step
            ))
    return out


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * float(x):.1f} %"


def _ci(ci: Any) -> str:
    if not ci or ci[0] is None:
        return ""
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
