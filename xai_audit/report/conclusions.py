"""Template data for the audit's conclusions: findings, further tests, recommendations, verification.

Like the rest of the report layer, everything here is formatted for display
and nothing is HTML: the templates escape every string.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from xai_audit.judge.findings import KIND_LABELS

_DASH = "—"
_KINDS = ("shortcut", "bias", "shift", "fragility", "reliance")
#: hard examples listed by id in the recommendations section
MAX_HARD_LISTED = 12
#: entries (findings of one test and kind taken together) shown on the summary pages; the appendix lists all
SUMMARY_FINDINGS = 8
#: recommendation rows shown in the body; the appendix and finetune_manifest.csv have them all
BODY_RECOMMENDATIONS = 5
_ACTION_LABELS = {
    "augment": "Augment",
    "add-group": "Add images of a group",
    "add-data": "Add data",
    "relabel-or-add": "Check the label, or add similar images",
}
_KIND_EXPLAINED = (
    ("Shortcut", "a change that should not alter the label drains the predictions into one class."),
    ("Bias", "the model is less accurate for some group."),
    ("Data shift", "the model is less accurate on another data set."),
    ("Fragility", "a change that should not alter the label costs accuracy; the errors spread over classes."),
    ("Reliance", "hiding a part that carries the label costs accuracy: expected, shown for information."),
)
#: the same without labels: what is measured is the model's own predictions
_KIND_EXPLAINED_UNLABELLED = (
    ("Shortcut", "a change that should not alter the label drains the predictions into one class."),
    ("Bias", "the model predicts some class more often for one group (no labels: shares of its predictions)."),
    ("Data shift", "the model's predictions are distributed differently on another data set."),
    ("Fragility", "a change that should not alter the label changes the model's predictions, which spread over "
     "classes."),
    ("Reliance", "hiding a part that carries the label changes the model's predictions: expected, shown for "
     "information."),
)


def findings(results: Mapping[str, Any]) -> dict[str, Any]:
    """The ranked findings with their kind, and a one-line count per kind."""
    items = []
    explained: set[str] = set()
    for f in results.get("findings") or []:
        kind = str(f.get("kind") or "")
        reading = "" if kind in explained else str(f.get("reading") or "")
        explained.add(kind)
        items.append({
            "rank": str(f.get("rank", "")),
            "kind": kind if kind in _KINDS else "other",
            "kind_label": str(f.get("kind_label") or KIND_LABELS.get(kind, "Finding")),
            "severity": str(f.get("severity", "info")),
            "title": str(f.get("title", "")),
            "detail": str(f.get("detail", "")),
            "reading": reading,
            "source": str(f.get("source") or "") + (
                "; also " + ", ".join(str(x) for x in f["also_found_by"]) if f.get("also_found_by") else ""),
            "discovered": (
                f"Found by discovery, not named in the plan: the {f['discovered'].get('discoverer')} discoverer "
                "proposed it on half of the images and it was confirmed on the other half."
                if isinstance(f.get("discovered"), Mapping) else ""),
        })
    counts = {}
    for item in items:
        counts[item["kind_label"]] = counts.get(item["kind_label"], 0) + 1
    mt = results.get("multiple_testing") or {}
    grouped = _grouped(items, [f for f in results.get("findings") or []])
    shown = grouped[:SUMMARY_FINDINGS]
    left = grouped[SUMMARY_FINDINGS:]
    n_left = sum(1 + len(g["also"]) for g in left)
    return {
        "entries": items,
        "summary": shown,
        "more_line": (
            f"{n_left} further finding(s) of lower rank: "
            + "; ".join(f"{g['kind_label'].lower()} from {g['test_name']}"
                        + (f" ({1 + len(g['also'])})" if g["also"] else "")
                        for g in left)
            + "." if left else ""),
        "counts_line": ", ".join(f"{n} {label.lower()}" for label, n in counts.items()),
        "kinds": [{"label": label, "text": text} for label, text in (
            _KIND_EXPLAINED if (results.get("samples") or {}).get("labelled", True) else _KIND_EXPLAINED_UNLABELLED)],
        "method_line": (
            f"A finding is a test that holds after Holm correction across all {mt.get('n_tests')} tests of this "
            f"audit (family-wise error rate {100 * float(mt.get('alpha', 0.05)):.0f} %), with its effect's interval "
            "clear of the smallest effect that matters. Ranked by kind, then by the lower end of the interval."
            + (f" Not applicable, so not counted: {', '.join(str(n) for n in mt['not_applicable'])} (the change "
               "cannot reach the model's input)." if mt.get("not_applicable") else "")
            if mt.get("n_tests") is not None else ""
        ),
    }


def _grouped(items: list[dict[str, Any]], raw: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The findings for the summary pages: those of one test and one kind taken together under the highest
    ranked (the corruptions' several shortcuts are one entry), each of the others named with its effect."""
    out: list[dict[str, Any]] = []
    where: dict[tuple[str, str], int] = {}
    for item, f in zip(items, raw):
        name = str(f.get("hypothesis") or "")
        key = (name, item["kind"] + "/" + item["kind_label"])
        if name and key in where:
            out[where[key]]["also"].append(_also_line(f))
            continue
        where[key] = len(out)
        out.append({**item, "also": [], "test_name": name or _DASH})
    return out


def _also_line(f: Mapping[str, Any]) -> str:
    """One more finding of the same test, in a few words: what changed, into which class, by how much."""
    test = str(f.get("test") or "")
    what = test.split(": ", 1)[1] if ": " in test else test
    what = what.replace("_", " ") if what and what != "primary" else str(f.get("hypothesis") or "")
    target = f" → '{f['class']}'" if f.get("class") else ""
    return f"{what}{target}: {_effect(f.get('effect'), f.get('ci'), str(f.get('metric') or ''))}"


def tests_table(step: Mapping[str, Any]) -> dict[str, Any] | None:
    """A hypothesis's further tests as one table (each counted in the Holm correction)."""
    tests = [t for t in step.get("tests") or [] if isinstance(t, Mapping)]
    if not tests:
        return None
    rows = []
    for t in tests:
        reading = str((t.get("details") or {}).get("reading") or "")
        claim = str(t.get("claim", "")) + (f" Reading: {reading}." if reading else "")
        rows.append([
            _cell(str(t.get("name", ""))),
            _cell(claim),
            _cell(_effect(t.get("effect"), t.get("ci"), str(t.get("metric", ""))), num=True),
            _cell(_p(t.get("p_value_adjusted")), num=True),
            _cell(str(t.get("verdict", ""))),
        ])
    columns = ["test", "claim", "effect [interval]", "Holm-adjusted p", "verdict"]
    return {
        "title": "Further tests (each counted in the audit's Holm correction)",
        "columns": [{"label": c, "num": c in ("effect [interval]", "Holm-adjusted p")} for c in columns],
        "rows": rows,
    }


def shortcut_line(step: Mapping[str, Any]) -> dict[str, str] | None:
    """Shortcut or fragility? The answer of a hypothesis's own shortcut test, in one line."""
    test = next((t for t in step.get("tests") or [] if isinstance(t, Mapping) and t.get("kind") == "shortcut"
                 and not t.get("explains")), None)
    if test is None:
        return None
    d = test.get("details") or {}
    supported = test.get("verdict") == "supported"
    label = "Shortcut" if supported else ("Fragility, not a shortcut" if step.get("verdict") == "supported" else "No shortcut")
    return {
        "label": label,
        "supported": "yes" if supported else "",
        "text": (
            f"{d.get('reading', '')}. '{d.get('class')}' share of predictions "
            f"{_pct(test.get('before'))} → {_pct(test.get('after'))}, "
            f"{_effect(test.get('effect'), test.get('ci'), 'share')} (simultaneous interval), "
            f"Holm-adjusted {_p(test.get('p_value_adjusted'))}."
        ),
    }


def subject_lines(step: Mapping[str, Any]) -> list[dict[str, str]]:
    """Shortcut or fragility, subject by subject, for a step that tests several interventions (a corruption
    battery: one test per corruption, each with its shortcut test ``explains``-ing it), after Holm: which drain
    the predictions into one class (shortcut), which cost accuracy with the errors spread (fragility), and which
    changed nothing the data can tell."""
    tests = [t for t in step.get("tests") or [] if isinstance(t, Mapping)]
    shortcuts = {str(t.get("explains")): t for t in tests if t.get("kind") == "shortcut" and t.get("explains")}
    if not shortcuts:
        return []
    drained, fragile, neither = [], [], []
    for t in tests:
        name = str(t.get("name", ""))
        if t.get("kind") == "shortcut" or name not in shortcuts:
            continue
        shortcut = shortcuts[name]
        if shortcut.get("verdict") == "supported":
            d = shortcut.get("details") or {}
            drained.append(f"{name.replace('_', ' ')} → '{d.get('class')}' (+{100 * float(shortcut.get('effect') or 0):.1f} "
                           f"points of the predictions, Holm-adjusted {_p(shortcut.get('p_value_adjusted'))})")
        elif t.get("verdict") == "supported":
            fragile.append(f"{name.replace('_', ' ')} ({_effect(t.get('effect'), t.get('ci'), str(t.get('metric', '')))})")
        else:
            neither.append(name.replace("_", " "))
    out = []
    if drained:
        out.append({"label": "Shortcut", "supported": "yes",
                    "text": "these drain the predictions into one class: " + "; ".join(drained) + "."})
    if fragile:
        out.append({"label": "Fragility, not a shortcut", "supported": "",
                    "text": "these cost accuracy and the errors spread over classes: " + "; ".join(fragile) + "."})
    if neither:
        out.append({"label": "No effect shown", "supported": "", "text": ", ".join(neither) + "."})
    return out


def recommendations(results: Mapping[str, Any]) -> dict[str, Any]:
    rows = [r for r in results.get("recommendations") or [] if isinstance(r, Mapping)]
    data_rows = [r for r in rows if r.get("action") != "relabel-or-add"]
    hard = [r for r in rows if r.get("action") == "relabel-or-add"]
    items = []
    for r in data_rows:
        items.append({
            "priority": str(r.get("priority", "")),
            "action": _ACTION_LABELS.get(str(r.get("action")), str(r.get("action"))),
            "what": _what(r),
            "amount": _amount(r),
            "reason": str(r.get("reason", "")),
            "short": _short_line(r),
        })
    return {
        "entries": items,
        "hard": [
            {"id": str(r.get("sample_id", "")), "group": str(r.get("group", "")), "reason": str(r.get("reason", ""))}
            for r in hard[:MAX_HARD_LISTED]
        ],
        "hard_more": f"and {len(hard) - MAX_HARD_LISTED} more in the manifest" if len(hard) > MAX_HARD_LISTED else "",
        "hard_line": (f"{len(hard)} audited image(s) the model gets wrong with confidence: check each label, or add "
                      "images like it." if hard else ""),
        "body_rows": BODY_RECOMMENDATIONS,
        "n_rows": len(rows),
        "empty_text": "No finding calls for new data, and no prediction is both wrong and confident.",
        "manifest_line": (
            f"All {len(rows)} rows are in finetune_manifest.csv beside this report "
            "(columns: priority, action, kind, sample_id, group, augmentation, fraction, count, reason, finding)."
        ),
        "verification": verification(results.get("verification")),
    }


def verification(data: Any) -> dict[str, Any] | None:
    """Before and after fine-tuning on the recommended data, side by side."""
    if not isinstance(data, Mapping):
        return None
    fine_tune = data.get("fine_tune") or {}
    rows = []
    for c in data.get("comparisons") or []:
        before, after = c.get("before") or {}, c.get("after") or {}
        rows.append({
            "title": str(c.get("title", "")),
            "kind": KIND_LABELS.get(str(c.get("kind", "")), str(c.get("kind", ""))),
            "metric": str(c.get("metric", "")),
            "before": _effect(before.get("effect"), before.get("ci"), str(c.get("metric", ""))),
            "before_verdict": str(before.get("verdict", _DASH)),
            "after": _effect(after.get("effect"), after.get("ci"), str(c.get("metric", ""))),
            "after_verdict": str(after.get("verdict", _DASH)),
            "change": _change(c.get("shrunk_by")),
        })
    acc = data.get("accuracy") or {}
    used = [f"{a.get('action')}: {a.get('what')}" for a in fine_tune.get("used") or []]
    skipped = [f"{a.get('action')}: {a.get('why')}" for a in fine_tune.get("skipped") or []]
    return {
        "rows": rows,
        "method": str(data.get("method", "")),
        "accuracy_line": (
            f"Clean accuracy {_pct(acc.get('before'))} before, {_pct(acc.get('after'))} after."
            if acc else ""
        ),
        "fine_tune_line": (
            f"Fine-tuned for {fine_tune.get('epochs')} epochs on {fine_tune.get('n_images')} images." if fine_tune else ""
        ),
        "used": used,
        "skipped": skipped,
        "after_findings": [str(t) for t in data.get("after_findings") or []],
        "after_report": str(data.get("after_report") or ""),
    }


# -- formatting -----------------------------------------------------------------


def _cell(text: str, num: bool = False) -> dict[str, Any]:
    return {"text": text or _DASH, "num": num}


def _pct(x: Any) -> str:
    return _DASH if x is None else f"{100 * float(x):.1f} %"


def _p(p: Any) -> str:
    if p is None:
        return _DASH
    p = float(p)
    return "p < 0.001" if p < 0.001 else (f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}")


def _effect(effect: Any, ci: Any, metric: str) -> str:
    if effect is None:
        return _DASH
    percent = any(w in metric for w in ("accuracy", "share", "rate", "gap", "distance"))
    if not percent:
        text = f"{float(effect):+.3g}"
        if ci and ci[0] is not None:
            text += f" [{float(ci[0]):+.3g}, {float(ci[1]):+.3g}]"
        return text
    text = f"{100 * float(effect):+.1f} pp"
    if ci and ci[0] is not None:
        text += f" [{100 * float(ci[0]):+.1f}, {100 * float(ci[1]):+.1f}]"
    return text


def _change(shrunk: Any) -> str:
    if shrunk is None:
        return _DASH
    shrunk = float(shrunk)
    return f"{100 * shrunk:.0f} % smaller" if shrunk >= 0 else f"{-100 * shrunk:.0f} % larger"


def _what(row: Mapping[str, Any]) -> str:
    if row.get("augmentation"):
        try:
            spec = json.loads(str(row["augmentation"]))
        except ValueError:
            return str(row["augmentation"])
        name = spec.pop("transform", "")
        extra = ", ".join(f"{k} {_short(v)}" for k, v in spec.items() if v not in ({}, [], None, ""))
        return f"{name} ({extra})" if extra else str(name)
    return str(row.get("group") or row.get("sample_id") or _DASH)


def _short_line(row: Mapping[str, Any]) -> str:
    action = row.get("action")
    if action == "augment":
        return f"{_what(row)} on {100 * float(row.get('fraction') or 0):.0f} % of the training images"
    if action in ("add-group", "add-data") and row.get("count") not in (None, ""):
        return f"{int(row['count'])} more images of {row.get('group')}" if int(row["count"]) else f"images of {row.get('group')}"
    return _what(row)


def _short(value: Any) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        return f"{value[0]:g} to {value[1]:g}"
    return str(value)


def _amount(row: Mapping[str, Any]) -> str:
    if row.get("fraction") not in (None, ""):
        return f"{100 * float(row['fraction']):.0f} % of each class's training images"
    if row.get("count") not in (None, ""):
        return f"{int(row['count'])} more images"
    return _DASH
