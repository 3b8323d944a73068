"""Accuracy per group (e.g. skin tone), with intervals and a test of equality."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from xai_audit.errors import DataError
from xai_audit.stats import ALPHA, bootstrap_gap_ci, chi2_homogeneity, wilson_ci
from xai_audit.types import HypothesisContext, HypothesisPlugin, HypothesisResult, Options


class GroupAccuracyOptions(Options):
    by: list[str] | None = Field(None, description="group columns; default: every group column of the data set")
    min_group_size: int = Field(30, ge=1, description="groups smaller than this are flagged as too small to judge")


class GroupAccuracyHypothesis(HypothesisPlugin):
    name = "group-accuracy"
    description = "Is the model equally accurate for every group? Per-group accuracy, gap, and a test."
    Options = GroupAccuracyOptions

    def test(self, context: HypothesisContext) -> HypothesisResult:
        opts: GroupAccuracyOptions = self.options
        labels = context.labels
        if labels is None:
            raise DataError("group-accuracy needs labelled samples; the data set has unlabelled ones")
        available = sorted({k for s in context.samples for k in s.groups})
        columns = opts.by or available
        if not columns:
            raise DataError("group-accuracy: the data set has no group columns; give one with 'by'")
        missing = [c for c in columns if c not in available]
        if missing:
            raise DataError(f"group-accuracy: no group column {missing[0]!r}; the data set has {available}")
        correct = context.probs.argmax(axis=1) == labels
        breakdown: dict[str, list[dict]] = {}
        per_column: dict[str, dict] = {}
        for column in columns:
            values = np.array([str(s.groups.get(column, "")) for s in context.samples])
            rows = []
            for value in sorted(set(values.tolist())):
                mask = values == value
                n = int(mask.sum())
                k = int(correct[mask].sum())
                ci = wilson_ci(k, n)
                rows.append(
                    {
                        "group": value,
                        "n": n,
                        "accuracy": k / n,
                        "ci": list(ci) if ci else None,
                        "too small": n < opts.min_group_size,
                    }
                )
            judged = [r for r in rows if not r["too small"]] or rows
            best = max(judged, key=lambda r: r["accuracy"])
            worst = min(judged, key=lambda r: r["accuracy"])
            gap = best["accuracy"] - worst["accuracy"]
            mask = np.isin(values, [r["group"] for r in judged])
            p_value = chi2_homogeneity(correct[mask], values[mask]) if len(judged) > 1 else None
            ci = (
                bootstrap_gap_ci(correct, values, best["group"], worst["group"], seed=context.seed)
                if len(judged) > 1
                else None
            )
            breakdown[column] = rows
            per_column[column] = {
                "gap": gap,
                "ci": list(ci) if ci else None,
                "p_value": p_value,
                "best": best["group"],
                "worst": worst["group"],
                "too_small": [r["group"] for r in rows if r["too small"]],
            }
        if len(per_column) > 1:
            breakdown["gap by column"] = [
                {"column": c, "gap": v["gap"], "ci": v["ci"], "p_value": v["p_value"], "best": v["best"], "worst": v["worst"]}
                for c, v in per_column.items()
            ]
        main = max(per_column, key=lambda c: per_column[c]["gap"])
        stats = per_column[main]
        p_value = stats["p_value"]
        ci = tuple(stats["ci"]) if stats["ci"] else None
        supported = p_value is not None and p_value < ALPHA and ci is not None and ci[0] > 0
        return HypothesisResult(
            claim=f"The model's accuracy differs between {main} groups (worst: {stats['worst']}).",
            metric="accuracy gap (best group - worst group)",
            before=float(correct.mean()),
            after=None,
            effect=float(stats["gap"]),
            ci=ci,
            p_value=p_value,
            verdict="supported" if supported else ("inconclusive" if p_value is None else "not supported"),
            n=len(correct),
            test="chi-square test of equal accuracy across groups (Fisher's exact for two small groups); "
            "95 % bootstrap interval of the gap",
            breakdown=breakdown,
            details={"column": main, "min_group_size": opts.min_group_size,
                     "too_small": ", ".join(stats["too_small"]) or "none"},
        )
