"""Checks that gate: small comparisons evaluated against results.json, no ``eval``.

A check is ``PATH OP VALUE``: PATH is a dotted path into the results
(names may contain ``-``; ``[0]`` indexes a list), OP one of
``< <= > >= == !=``, VALUE a number, a quoted string, ``true``, ``false``
or ``null``. In the plan a check is a string (a violation FAILs) or
``{check: "...", severity: warn}`` (a violation WARNs).

Besides the raw results, a few names read the way a reviewer writes them:
``hypotheses.<name>.accuracy_drop`` (the effect of an accuracy hypothesis),
``groups.<column>.accuracy_gap`` / ``.worst`` / ``.p_value`` (from group-accuracy),
``explainers.<name>.sanity`` (``"pass"``, ``"partly"``, ``"fail"`` or ``"not run"``, from the
parameter-randomisation test) and ``.trust_level`` (``"trusted"``, ``"weak"``,
``"not trusted"``), and ``accuracy`` (the overall accuracy as a number).
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any

from xai_audit.errors import PlanError

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}
_CHECK = re.compile(
    r"""^\s*(?P<path>[A-Za-z_][\w\-]*(?:\[\d+\])*(?:\.[\w\-]+(?:\[\d+\])*)*)\s*
        (?P<op><=|>=|==|!=|<|>)\s*
        (?P<value>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|"[^"]*"|'[^']*'|true|false|null)\s*$""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Check:
    text: str
    path: str
    op: str
    value: Any
    severity: str = "fail"  # what a violation means: "fail" or "warn"


def parse_check(text: str, severity: str = "fail") -> Check:
    """Parse one check; ValueError with a readable reason when it is not one."""
    match = _CHECK.match(text)
    if not match:
        raise ValueError(
            f"cannot read check {text!r}: write PATH OP VALUE, e.g. 'hypotheses.luminance.accuracy_drop < 0.10' "
            "(OP is one of < <= > >= == !=; VALUE a number, a quoted string, true, false or null)"
        )
    raw = match["value"]
    if raw in ("true", "false"):
        value: Any = raw == "true"
    elif raw == "null":
        value = None
    elif raw[0] in "\"'":
        value = raw[1:-1]
    else:
        value = float(raw)
    if match["op"] in ("<", "<=", ">", ">=") and not isinstance(value, float):
        raise ValueError(f"cannot read check {text!r}: {match['op']} compares numbers, and {raw} is not one")
    if severity not in ("fail", "warn"):
        raise ValueError(f"severity must be 'fail' or 'warn', not {severity!r}")
    return Check(text=text.strip(), path=match["path"], op=match["op"], value=value, severity=severity)


def parse_plan_checks(entries: Any, add_problem) -> list[Check]:
    """Checks from the plan's ``checks:`` list; each problem goes to ``add_problem(path, message)``."""
    checks: list[Check] = []
    if entries is None:
        return checks
    if not isinstance(entries, list):
        add_problem(("checks",), "must be a list of checks")
        return checks
    for i, entry in enumerate(entries):
        text, severity = entry, "fail"
        if isinstance(entry, dict):
            unknown = set(entry) - {"check", "severity"}
            if unknown or "check" not in entry:
                add_problem(("checks", i), "a check is a string, or {check: '...', severity: fail|warn}")
                continue
            text, severity = entry["check"], entry.get("severity", "fail")
        if not isinstance(text, str):
            add_problem(("checks", i), "a check is a string, or {check: '...', severity: fail|warn}")
            continue
        try:
            checks.append(parse_check(text, severity))
        except ValueError as exc:
            add_problem(("checks", i), str(exc))
    return checks


def check_view(results: dict[str, Any]) -> dict[str, Any]:
    """The results with the reviewer-friendly names added (see the module doc)."""
    view = dict(results)
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
    current = view
    for part in path.split("."):
        name, *indices = re.split(r"\[", part)
        if not isinstance(current, dict) or name not in current:
            raise KeyError(path)
        current = current[name]
        for index in indices:
            k = int(index.rstrip("]"))
            if not isinstance(current, list) or k >= len(current):
                raise KeyError(path)
            current = current[k]
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


__all__ = ["Check", "PlanError", "check_view", "evaluate_checks", "junit_xml", "parse_check", "parse_plan_checks"]
