"""Checks that gate: each parsed check (xai_audit.plan.checks) evaluated against results.json."""

from __future__ import annotations

import math
import re
from typing import Any

from xai_audit.plan.checks import OPS, Check


def check_view(results: dict[str, Any]) -> dict[str, Any]:
    """The results with the reviewer-friendly names added (see the module doc), without ``run``: how the
    audit ran (times, batch sizes, the cache) differs between runs, and a check's verdict must not."""
    view = {k: v for k, v in results.items() if k != "run"}
    hypotheses = {}
    groups: dict[str, Any] = {}
    for name, entry in (results.get("hypotheses") or {}).items():
        entry = dict(entry)
        if entry.get("status") == "ok" and entry.get("metric") == "accuracy":
            entry["accuracy_drop"] = entry.get("effect")
        hypotheses[name] = entry
        if entry.get("plugin") == "group-accuracy" and entry.get("status") == "ok":
            details = entry.get("details") or {}
            column = details.get("column")
            if column:
                groups[column] = {
                    "accuracy_gap": entry.get("effect"),
                    "worst": (entry.get("claim") or "").rsplit("worst: ", 1)[-1].rstrip(").") or None,
                    "p_value": entry.get("p_value_adjusted", entry.get("p_value")),
                    "verdict": entry.get("verdict"),
                    "ci": entry.get("ci"),
                }
    view["hypotheses"] = hypotheses
    view["groups"] = groups
    explainers = {}
    for name, entry in (results.get("explainers") or {}).items():
        entry = dict(entry)
        trust = entry.get("trust") if isinstance(entry.get("trust"), dict) else {}
        if trust:
            verdict = (trust.get("sanity") or {}).get("verdict")
            entry["sanity"] = {"passes": "pass", "fails": "fail"}.get(verdict, verdict)
            entry["trust_level"] = (trust.get("verdict") or {}).get("level")
        explainers[name] = entry
    view["explainers"] = explainers
    acc = results.get("accuracy")
    view["accuracy"] = acc.get("value") if isinstance(acc, dict) else acc
    return view


def _lookup(view: Any, path: str) -> Any:
    """The value at a dotted ``path``; a key with dots in it (a step named ``gradcam@layer1.0``) is read whole,
    the longest key that fits first."""
    current = view
    parts = path.split(".")
    i = 0
    while i < len(parts):
        for j in range(len(parts), i, -1):
            name, *indices = re.split(r"\[", ".".join(parts[i:j]))
            if isinstance(current, dict) and name in current and (j == i + 1 or "[" not in ".".join(parts[i:j - 1])):
                break
        else:
            raise KeyError(path)
        current = current[name]
        for index in indices:
            k = int(index.rstrip("]"))
            if not isinstance(current, list) or k >= len(current):
                raise KeyError(path)
            current = current[k]
        i = j
    return current


def evaluate_checks(checks: list[Check], results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per check: ``{check, severity, status: PASS|WARN|FAIL, actual, reason}``."""
    view = check_view(results)
    rows = []
    for check in checks:
        row = {"check": check.text, "severity": check.severity, "actual": None, "reason": ""}
        try:
            actual = _lookup(view, check.path)
        except KeyError:
            row.update(status="FAIL", reason=f"{check.path} is not in the results (a step that did not run?)")
            rows.append(row)
            continue
        row["actual"] = actual
        if actual is None or (isinstance(actual, float) and math.isnan(actual)):
            ok, reason = False, f"{check.path} was not computed"
        elif check.op in ("<", "<=", ">", ">=") and not isinstance(actual, (int, float)):
            ok, reason = False, f"{check.path} is {actual!r}, not a number"
        else:
            ok = bool(OPS[check.op](actual, check.value))
            reason = "" if ok else f"{check.path} is {actual!r}"
        row["status"] = "PASS" if ok else ("WARN" if check.severity == "warn" else "FAIL")
        row["reason"] = reason
        rows.append(row)
    return rows


def junit_xml(rows: list[dict[str, Any]], title: str) -> str:
    """The checks as a JUnit XML report for CI systems (a WARN is a passing test with a message)."""
    from xml.sax.saxutils import escape, quoteattr

    failures = sum(r["status"] == "FAIL" for r in rows)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f"<testsuite name={quoteattr('xai-audit checks: ' + title)} tests=\"{len(rows)}\" failures=\"{failures}\" errors=\"0\">"]
    for row in rows:
        lines.append(f"  <testcase classname=\"xai-audit.checks\" name={quoteattr(row['check'])}>")
        if row["status"] == "FAIL":
            lines.append(f"    <failure message={quoteattr(row['reason'])}>{escape(str(row['actual']))}</failure>")
        elif row["status"] == "WARN":
            lines.append(f"    <system-out>{escape('WARN: ' + row['reason'])}</system-out>")
        lines.append("  </testcase>")
    lines.append("</testsuite>")
    return "\n".join(lines) + "\n"

