"""Findings: what the audit concludes, from the numbers, most important first.

A finding is stated only when the numbers support it: a test whose verdict
is "supported" after Holm correction across every test of the audit. Each
finding has a *kind*, because the same accuracy drop means different things:

``shortcut``   a change that should not alter the label drains the
               predictions into one class: the model reads the change as
               evidence for that class (darker means "sad").
``bias``       the model is less accurate for some group (or, found by
               discovery, on a slice of the data: a property range, a
               metadata value, a cluster of its embedding).
``shift``      the model is less accurate on another data set.
``fragility``  a change that should not alter the label costs accuracy,
               and the changed predictions spread over several classes.
``reliance``   hiding a part that carries the label costs accuracy: the
               model uses that part, as it should (shown for information).

Without labels nothing can be said about accuracy: the same kinds are read
from the model's own predictions (a change flips them, a group gets another
class more often, another data set draws other predictions), and every
sentence says so.

Findings are ranked by kind in that order (what the model depends on that it
should not, then whom it fails, then how robust it is), then by the lower end
of the effect's interval: the effect we can be sure of, so a large but
uncertain effect does not outrank a slightly smaller, certain one.
"""

from __future__ import annotations

from typing import Any

SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}
KIND_ORDER = {"shortcut": 0, "bias": 1, "shift": 2, "fragility": 3, "reliance": 4, "": 5}
KIND_LABELS = {
    "shortcut": "Shortcut",
    "bias": "Bias",
    "shift": "Data shift",
    "fragility": "Fragility",
    "reliance": "Reliance",
    "": "Finding",
}


def severity(effect: float | None, kind: str = "") -> str:
    if effect is None or kind == "reliance":
        return "info"
    if effect >= 0.10:
        return "high"
    if effect >= 0.03:
        return "medium"
    return "low"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _pp(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f} pp"


def _p(p: float | None) -> str:
    if p is None:
        return ""
    return "Holm-adjusted p < 0.001" if p < 0.001 else f"Holm-adjusted p = {p:.2g}"


def _interval(ci: Any, label: str = "95 % CI") -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f" ({label} {_pp(ci[0])} to {_pp(ci[1])})"


def derive_findings(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The supported tests of ``results["hypotheses"]`` as ranked findings."""
    findings: list[dict[str, Any]] = []
    labelled = bool((results.get("samples") or {}).get("labelled", True))
    for name, entry in (results.get("hypotheses") or {}).items():
        if entry.get("status") != "ok":
            continue
        found = _findings_of(name, entry, labelled)
        if entry.get("discovered"):  # proposed by a discoverer, confirmed on held-back images: the reader is told
            for finding in found:
                finding["discovered"] = dict(entry["discovered"])
        findings += found
    findings.sort(key=_rank_key)
    # the same claim with the same effect from two steps (a suggested hypothesis repeating a region the
    # plan tests) is one finding; the others that found it are named on it
    unique: dict[tuple, dict[str, Any]] = {}
    for finding in findings:
        key = (finding.get("title"), finding.get("effect"))
        if key in unique:
            unique[key].setdefault("also_found_by", []).append(finding.get("source"))
        else:
            unique[key] = finding
    findings = list(unique.values())
    for rank, finding in enumerate(findings, start=1):
        finding["rank"] = rank
    return findings


def _rank_key(finding: dict[str, Any]) -> tuple:
    ci = finding.get("ci")
    sure = ci[0] if ci and ci[0] is not None else (finding.get("effect") or 0.0)
    return (KIND_ORDER.get(finding["kind"], 5), SEVERITY_ORDER[finding["severity"]], -sure, -(finding.get("effect") or 0))


def _findings_of(name: str, entry: dict[str, Any], labelled: bool = True) -> list[dict[str, Any]]:
    """One finding per tested subject: a supported shortcut absorbs the accuracy drop it explains."""
    tests = list(entry.get("tests") or [])
    shortcuts = {t.get("explains", ""): t for t in tests if t.get("kind") == "shortcut"}
    subjects = [("", {**entry, "name": name}, entry.get("kind", ""))]
    subjects += [(t["name"], t, t.get("kind", "")) for t in tests if t.get("kind") != "shortcut"]
    out = []
    for key, test, kind in subjects:
        shortcut = shortcuts.pop(key, None)
        if shortcut is not None and shortcut.get("verdict") == "supported":
            out.append(_shortcut_finding(name, shortcut, test))
        elif test.get("verdict") == "supported":
            out.append(_finding(name, key, test, kind or _infer_kind(test), shortcut, labelled))
    for shortcut in shortcuts.values():  # a shortcut whose base test is not listed
        if shortcut.get("verdict") == "supported":
            out.append(_shortcut_finding(name, shortcut, None))
    return out


def _infer_kind(test: dict[str, Any]) -> str:
    metric = str(test.get("metric", ""))
    return "bias" if "group" in metric else ("fragility" if metric in ("accuracy", "flip rate") else "")


def _source(name: str, key: str) -> str:
    return f"hypotheses.{name}" + (f" / {key}" if key else "")


def _base(name: str, key: str, test: dict[str, Any], kind: str) -> dict[str, Any]:
    effect = test.get("effect")
    # an effect in another unit than a share (a perturbation budget) says its own severity
    stated = (test.get("details") or {}).get("severity")
    return {
        "kind": kind,
        "kind_label": KIND_LABELS.get(kind, "Finding"),
        "severity": stated if stated in SEVERITY_ORDER and kind != "reliance" else severity(effect, kind),
        "title": test.get("claim", name),
        "source": _source(name, key),
        "hypothesis": name,
        "test": key or "primary",
        "metric": test.get("metric"),
        "effect": effect,
        "ci": test.get("ci"),
        "p_value_adjusted": test.get("p_value_adjusted", test.get("p_value")),
        "n": test.get("n"),
    }


def _shortcut_finding(name: str, shortcut: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
    d = shortcut.get("details") or {}
    finding = _base(name, shortcut["name"], shortcut, "shortcut")
    finding["class"] = d.get("class")
    finding["source"] = _source(name, shortcut["name"])
    conf = shortcut.get("test", "")
    label = "simultaneous CI" if "simultaneous" in conf else "95 % CI"
    ci = shortcut.get("ci")
    ci_text = f", {label} {_pp(ci[0])} to {_pp(ci[1])}" if ci and ci[0] is not None else ""
    detail = (
        f"'{d.get('class')}' rises from {_pct(shortcut.get('before'))} to {_pct(shortcut.get('after'))} of the "
        f"predictions ({_pp(shortcut.get('effect'))}{ci_text}) "
        f"and receives {_pct(d.get('concentration'))} of the {d.get('changed')} changed predictions"
    )
    if base is not None and base.get("metric") == "accuracy" and base.get("before") is not None:
        detail += f"; accuracy falls from {_pct(base.get('before'))} to {_pct(base.get('after'))}"
    detail += f". {_p(finding['p_value_adjusted'])}, n = {shortcut.get('n')}."
    finding["detail"] = detail
    finding["reading"] = (
        "A change that should not alter the label sends the predictions into one class: the model reads it as "
        f"evidence for '{d.get('class')}'."
    )
    return finding


def _finding(name: str, key: str, test: dict[str, Any], kind: str, shortcut: dict[str, Any] | None,
             labelled: bool = True) -> dict[str, Any]:
    finding = _base(name, key, test, kind)
    effect, ci, p = test.get("effect"), test.get("ci"), finding["p_value_adjusted"]
    metric = test.get("metric")
    d = test.get("details") or {}
    p_text = _p(p)
    if isinstance(d.get("slice"), dict):  # a weak slice found by discovery: worded by its confirmation
        finding["detail"] = f"{d.get('detail', '')} {p_text}."
        finding["reading"] = str(d["slice"].get("reading") or "")
        finding["slice"] = str(d["slice"].get("description") or "")
        return finding
    if kind == "bias" and not labelled:
        detail = (
            f"{metric}: {_pp(effect)}{_interval(ci)} between {d.get('column', 'the')} groups "
            f"{d.get('best', '?')} ({_pct(test.get('before'))}) and {d.get('worst', '?')} ({_pct(test.get('after'))}); "
            f"no labels, so these are shares of the model's predictions. {p_text}."
        )
        finding["group"] = {"column": d.get("column"), "worst": d.get("worst"), "best": d.get("best")}
    elif kind == "bias" and d.get("detail"):  # a gap in another unit than accuracy, worded by its plugin
        detail = f"{d['detail']} {p_text}."
        finding["group"] = {"column": d.get("column"), "worst": d.get("worst"), "best": d.get("best")}
    elif kind == "bias":
        detail = (
            f"Gap {_pp(effect)}{_interval(ci)} between the best and the worst group "
            f"({d.get('best', '?')} {_pct(test.get('before'))}, {d.get('worst', '?')} {_pct(test.get('after'))}; "
            f"n = {d.get('n_best', '?')} and {d.get('n_worst', '?')}). {p_text}."
        )
        finding["group"] = {"column": d.get("column"), "worst": d.get("worst"), "best": d.get("best")}
    elif metric == "accuracy":
        detail = (
            f"Accuracy falls from {_pct(test.get('before'))} to {_pct(test.get('after'))}: "
            f"{_pp(-effect if effect is not None else None)}{_interval(_neg(ci))}. {p_text}, n = {test.get('n')}."
        )
    else:
        detail = f"{metric}: {_pct(effect)}{_interval(ci)}. {p_text}, n = {test.get('n')}."
    if shortcut is not None:
        reading = (shortcut.get("details") or {}).get("reading")
        if reading:
            detail += f" Where the predictions go: {reading}."
    finding["detail"] = detail
    finding["reading"] = (READINGS if labelled else READINGS_UNLABELLED).get(kind, "")
    return finding


#: what each kind of finding means, with labels (accuracy) and without (the model's own predictions)
READINGS = {
    "fragility": "A change that should not alter the label costs accuracy, and the errors spread over several "
    "classes: fragility, not a shortcut.",
    "reliance": "Hiding this part costs accuracy because it carries the label: the model uses it, as expected.",
    "bias": "The model fails some group more often than another.",
    "shift": "The model is less accurate on the other data set.",
}
READINGS_UNLABELLED = {
    "fragility": "A change that should not alter the label changes the model's predictions, and the changed "
    "predictions spread over several classes: fragility, not a shortcut (no labels: measured against the model's "
    "own clean predictions).",
    "reliance": "Hiding this part changes the model's predictions: the model uses it (no labels: measured against "
    "its own clean predictions).",
    "bias": "The model predicts some class more often for one group than for another (no labels: whether that is "
    "a mistake needs labelled images).",
    "shift": "The model's predictions are distributed differently on the other data set (no labels: whether they "
    "are worse needs labelled images).",
}


def _neg(ci: Any) -> Any:
    if not ci or ci[0] is None or ci[1] is None:
        return None
    return [-ci[1], -ci[0]]
