"""Findings: what the audit concludes, from the numbers, most severe first.

A finding is stated only when the numbers support it: a hypothesis whose
verdict is "supported" after Holm correction. Severity follows the effect
size (accuracy points lost or gap between groups).
"""

from __future__ import annotations

from typing import Any

SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}


def severity(effect: float | None) -> str:
    if effect is None:
        return "info"
    if effect >= 0.10:
        return "high"
    if effect >= 0.03:
        return "medium"
    return "low"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def derive_findings(results: dict[str, Any]) -> list[dict[str, Any]]:
    findings: list[dict[str, Any]] = []
    for name, entry in results.get("hypotheses", {}).items():
        if entry.get("status") != "ok" or entry.get("verdict") != "supported":
            continue
        effect = entry.get("effect")
        ci = entry.get("ci")
        p = entry.get("p_value_adjusted", entry.get("p_value"))
        interval = f" (95 % CI {_pct(ci[0])} to {_pct(ci[1])})" if ci else ""
        p_text = f", Holm-adjusted p = {p:.2g}" if p is not None else ""
        if entry.get("metric") == "accuracy":
            detail = (
                f"Accuracy falls from {_pct(entry.get('before'))} to {_pct(entry.get('after'))}: "
                f"a drop of {_pct(effect)}{interval}{p_text}, n = {entry.get('n')}."
            )
        else:
            detail = f"{entry.get('metric')}: {_pct(effect)}{interval}{p_text}, n = {entry.get('n')}."
        findings.append(
            {"severity": severity(effect), "title": entry.get("claim", name), "detail": detail, "source": f"hypotheses.{name}",
             "effect": effect}
        )
    findings.sort(key=lambda f: (SEVERITY_ORDER[f["severity"]], -(f["effect"] or 0)))
    return findings
