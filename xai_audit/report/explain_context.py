"""Template data for the explanations section: which samples, the per-case grids, and trust.

Reads ``results["examples"]`` (xai_audit.run.examples) and each explainer's
``trust`` (xai_audit.judge.trust); every number is formatted here.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from xai_audit.judge.trust import thin
from xai_audit.report import figures, specs
from xai_audit.report.artifacts import ReportArtifacts
from xai_audit.report.heatmaps import case_grid

#: rows of one case grid
MAX_CASE_ROWS = 6
_DASH = "—"
_LEVEL_CLASS = {"trusted": "trust-good", "weak": "trust-weak", "not trusted": "trust-bad"}


def overview(results: Mapping[str, Any], artifacts: ReportArtifacts, classes: list[str]) -> dict[str, Any]:
    """Selection rule and counts, error flow, one grid per case, the trust table, agreement."""
    examples = results.get("examples") or {}
    steps = results.get("explainers") or {}
    explained = [sid for case in (examples.get("cases") or {}).values() for sid in case.get("shown", [])]
    columns = _grid_columns(steps, artifacts, set(explained))
    cases = []
    for key, case in (examples.get("cases") or {}).items():
        shown = [sid for sid in case.get("shown", []) if sid in artifacts.images]
        row = {"key": str(key), "title": str(case.get("title", key)), "n_audited": _int(case.get("n_audited")),
               "n_shown": _int(len(case.get("shown", []))), "figure": None}
        if shown and columns:
            row["figure"] = _case_figure(row["title"], shown[:MAX_CASE_ROWS], columns, artifacts, classes)
        cases.append(row)
    return {
        "available": bool(examples),
        "rule": str(examples.get("rule") or ""),
        "cases": cases,
        "grid_names": list(columns),
        "grid_text": (
            "Each row: the image with its true and predicted class, then every explainer's map of the predicted class "
            "over a grey copy of it; red pushes toward the class, blue against. Every explainer's maps are divided by "
            "its own 99th percentile of |attribution|, so one colour bar reads all columns. Under each map, its trust: "
            "insertion AUC − deletion AUC (higher is more faithful; a random pixel order gets the value in brackets), "
            "and the share of its mass in the regions that define the class, where they are known."
        ),
        "flow": _flow(examples.get("confusion_flow")),
        "sink": _sink(examples.get("error_sink")),
        "trust_rows": [r for r in (_trust_row(name, step) for name, step in steps.items()) if r],
        "agreement": _agreement_figure(steps),
    }


def trust_summary(step: Mapping[str, Any]) -> dict[str, Any] | None:
    """One explainer's trust, as a verdict badge and key/value rows."""
    trust = step.get("trust")
    if not trust:
        return None
    verdict = trust.get("verdict") or {}
    rows = []
    faith = trust.get("faithfulness") or {}
    if faith:
        rows.append({"key": "insertion − deletion AUC (random order)",
                     "value": f"{_fix(faith.get('score'))} ({_fix(faith.get('random_score'))})"})
        rows.append({"key": "deletion AUC, low is good (random)",
                     "value": f"{_fix(faith.get('deletion_auc'))} ({_fix(faith.get('random_deletion_auc'))})"})
        rows.append({"key": "insertion AUC, high is good (random)",
                     "value": f"{_fix(faith.get('insertion_auc'))} ({_fix(faith.get('random_insertion_auc'))})"})
        rows.append({"key": "images where it beats a random order", "value": _pct(faith.get("beats_random_share"), 0)})
        if faith.get("gain_ci"):
            low, high = faith["gain_ci"]
            rows.append({"key": "gain over the random order, 95 % CI over the scored images",
                         "value": f"{_fix(faith.get('gain'))} ({_fix(low)} to {_fix(high)})"})
    budget = trust.get("budget")
    if budget:
        rows.append({"key": "what the scores rest on (trust budget)", "value": budget_text(budget)})
    sanity = trust.get("sanity")
    if sanity and sanity.get("stages"):
        stages = ", ".join(f"{s['layers_randomised']} of {s['of']} layers: {_fix(s['similarity'])}" for s in sanity["stages"])
        rows.append({"key": "sanity: similarity to the map after randomising layers (top down)",
                     "value": f"{stages} → {sanity.get('verdict', _DASH)} (fails at ≥ {_fix(sanity.get('threshold'), 1)})"})
        if sanity.get("zero_in_both"):  # pixels both maps leave at zero are left out of the similarity above
            rows.append({"key": "sanity over every pixel, with the pixels zero in both maps (their share)",
                         "value": f"{_fix(sanity.get('final_similarity_all_pixels'))} → "
                                  f"{sanity.get('verdict_all_pixels', _DASH)} ({_pct(sanity.get('zero_in_both'), 0)})"})
    loc = trust.get("localisation")
    if loc:
        rows.append({"key": f"mass in {', '.join(loc.get('regions', []))}, ±{loc.get('tolerance_px', 0)} px (their area)",
                     "value": f"{_pct(loc.get('mass_share'))} ({_pct(loc.get('area_share'))})"})
        rows.append({"key": "pointing game (maximum inside them)", "value": _pct(loc.get("pointing_game"), 0)})
    agreement = trust.get("agreement") or {}
    if agreement:
        rows.append({"key": "agreement with other explainers (Spearman)",
                     "value": ", ".join(f"{k} {_fix(v)}" for k, v in agreement.items())})
    level = str(verdict.get("level") or "")
    return {"level": level, "level_class": _LEVEL_CLASS.get(level, "trust-weak"), "text": str(verdict.get("text") or ""),
            "rows": rows}


def budget_text(budget: Mapping[str, Any]) -> str:
    """The trust step's size in words: images and steps of the curves, the sanity check, its passes."""
    sanity = (f"sanity check on {budget.get('sanity_samples')} image(s) at {budget.get('sanity_stages')} stage(s)"
              if budget.get("sanity_stages") else "no sanity check")
    against = (f" against the explainer's {budget['explainer_passes']}" if budget.get("explainer_passes") is not None
               else " (the explainer states no cost)")
    mode = {"explainer": "sized to its explainer", "full": "full, as the plan asks",
            "unknown cost": "full"}.get(str(budget.get("mode")), str(budget.get("mode")))
    return (f"curves on {budget.get('images')} of {budget.get('of')} explained images at {budget.get('steps')} steps; "
            f"{sanity}; {budget.get('passes')} model passes{against} ({mode})")


#: display titles of the tables the host adds to an explainer
TABLE_TITLES = {
    "region_mass": "Attribution mass per region: share of |attribution| by explained class (last row: share of pixels)",
}


def table_title(key: str) -> str:
    return TABLE_TITLES.get(key, key)


def sample_trust_lines(step: Mapping[str, Any]) -> dict[str, str]:
    """sample id -> a short line of its heatmap's trust (insertion − deletion, and localisation)."""
    out = {}
    for row in ((step.get("trust") or {}).get("per_sample") or []):
        text = f"ins−del {_fix(row.get('score'))} ({_fix(row.get('random_score'))})"
        if row.get("mass_in_class_regions") is not None:
            text += f"\nin regions {_pct(row['mass_in_class_regions'], 0)}"
        out[str(row.get("id"))] = text
    return out


# -- pieces ----------------------------------------------------------------------


def _grid_columns(steps: Mapping[str, Any], artifacts: ReportArtifacts, explained: set[str]) -> dict[str, dict[str, Any]]:
    columns = {}
    for name, step in steps.items():
        exp = artifacts.explanations.get(name)
        if step.get("status") != "ok" or exp is None or exp.maps is None or set(exp.sample_ids) != explained:
            continue
        index = {str(sid): i for i, sid in enumerate(exp.sample_ids)}
        columns[name] = {"index": index, "maps": np.asarray(exp.maps), "signed": bool(exp.signed),
                         "scale": figures.robust_scale([np.asarray(exp.maps)]), "lines": sample_trust_lines(step)}
    return columns


def _case_figure(title: str, ids: list[str], columns: Mapping[str, Mapping[str, Any]], artifacts: ReportArtifacts,
                 classes: list[str]) -> dict[str, Any]:
    titles = []
    for sid in ids:
        label = artifacts.labels.get(sid)
        predicted, probability = artifacts.predictions.get(sid, (None, None))
        lines = [_clip(sid, 22)]
        if label is not None:
            lines.append(f"true: {_clip(_name(classes, label), 14)}")
        if predicted is not None:
            lines.append(f"pred: {_clip(_name(classes, predicted), 14)} ({float(probability):.2f})")
        titles.append("\n".join(lines))
    grid = {
        name: {
            "maps": np.stack([col["maps"][col["index"][sid]] for sid in ids]),
            "signed": col["signed"],
            "scale": col["scale"],
            "labels": [col["lines"].get(sid, "") for sid in ids],
        }
        for name, col in columns.items()
    }
    src = case_grid([artifacts.images[sid] for sid in ids], titles, grid)
    return {
        "src": src,
        "alt": f"{title}: {len(ids)} images, each with the map of {len(grid)} explainers ({', '.join(grid)}).",
        "caption": f"{title}: every explainer's map of the predicted class, side by side (how to read it: above).",
        "samples": ids,
    }


def _flow(flow: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not flow:
        return None
    to = flow.get("to") or []
    text = (
        f"The class recalled worst is {flow['class']} ({_pct(flow.get('recall'))} of {_int(flow.get('n'))} images). "
        + (
            f"Its {_int(flow.get('errors'))} errors go to: "
            + ", ".join(f"{row['class']} {_int(row['n'])} ({_pct(row['share'], 0)})" for row in to) + "."
            if to else "It has no errors."
        )
    )
    rows = [{"class": str(row["class"]), "n": _int(row["n"]), "share": _pct(row["share"], 0)} for row in to]
    return {"text": text, "class": str(flow["class"]), "rows": rows}


def _sink(sink: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The class that collects the errors, in one sentence."""
    if not sink:
        return None
    sources = sink.get("from") or []
    text = (
        f"The class that collects the errors is {sink['class']}: {_int(sink.get('collected'))} of the "
        f"{_int(sink.get('errors'))} wrong predictions ({_pct(sink.get('share'), 0)}) name it"
        + (", from " + ", ".join(f"{row['class']} {_int(row['n'])}" for row in sources) if sources else "") + "."
    )
    return {"text": text, "class": str(sink["class"])}


def _trust_row(name: str, step: Mapping[str, Any]) -> dict[str, Any] | None:
    summary = trust_summary(step)
    if summary is None:
        return None
    trust = step["trust"]
    faith = trust.get("faithfulness") or {}
    sanity = trust.get("sanity") or {}
    loc = trust.get("localisation") or {}
    return {
        "name": str(name),
        "level": summary["level"],
        "level_class": summary["level_class"],
        "score": f"{_fix(faith.get('score'))} ({_fix(faith.get('random_score'))})" + _thin(trust.get("budget")),
        "deletion": f"{_fix(faith.get('deletion_auc'))} / {_fix(faith.get('insertion_auc'))}",
        "sanity": f"{_fix(sanity.get('final_similarity'))} {sanity.get('verdict')}" if sanity.get("stages") else _DASH,
        "mass": f"{_pct(loc.get('mass_share'), 0)} ({_pct(loc.get('area_share'), 0)})" if loc else _DASH,
        "pointing": _pct(loc.get("pointing_game"), 0) if loc else _DASH,
    }


def _thin(budget: Mapping[str, Any] | None) -> str:
    """Where the curves scored fewer images or steps than the full scores: on how many (the overview's cell)."""
    if not thin(budget):
        return ""
    return f", on {budget.get('images')} of {budget.get('of')} images at {budget.get('steps')} steps"


def _agreement_figure(steps: Mapping[str, Any]) -> dict[str, Any] | None:
    names = [n for n, s in steps.items() if (s.get("trust") or {}).get("agreement")]
    if len(names) < 2:
        return None
    values = [[1.0 if a == b else float((steps[a]["trust"]["agreement"] or {}).get(b, np.nan)) for b in names]
              for a in names]
    return specs.render_spec({
        "kind": "matrix", "title": "Agreement between explainers", "values": values, "rows": names, "cols": names,
        "signed": True, "caption": (
            "Spearman rank correlation of the explainers' |maps| on a coarse grid, averaged over the explained "
            "images: 1 = the same ranking of regions, 0 = unrelated. Explainers that disagree cannot all be right."
        ), "alt": f"Matrix of rank correlations between {len(names)} explainers.",
    }, {})


def _fix(value: Any, digits: int = 2) -> str:
    """A number with a fixed number of decimals (table columns line up)."""
    if value is None:
        return _DASH
    v = float(value)
    return f"{v:.{digits}f}" if np.isfinite(v) else _DASH


def _pct(value: Any, decimals: int = 1) -> str:
    if value is None:
        return _DASH
    return f"{float(value) * 100:.{decimals}f} %"


def _int(value: Any) -> str:
    return _DASH if value is None else str(int(value))


def _name(classes: Sequence[str], index: Any) -> str:
    try:
        return classes[int(index)]
    except (IndexError, TypeError, ValueError):
        return str(index)


def _clip(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
