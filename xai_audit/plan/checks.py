"""Checks that gate: small comparisons evaluated against results.json, no ``eval``.

A check is ``PATH OP VALUE``: PATH is a dotted path into the results
(names may contain ``-``, ``@``, ``:`` and ``/``, and a step's name its dots: ``explainers.gradcam@layer1.0.status``
reads the step ``gradcam@layer1.0``; ``[0]`` indexes a list), OP one of
``< <= > >= == !=``, VALUE a number, a quoted string, ``true``, ``false``
or ``null``. In the plan a check is a string (a violation FAILs) or
``{check: "...", severity: warn}`` (a violation WARNs).

Besides the raw results, a few names read the way a reviewer writes them:
``hypotheses.<name>.accuracy_drop`` (the effect of an accuracy hypothesis),
``groups.<column>.accuracy_gap`` / ``.worst`` / ``.p_value`` (from group-accuracy),
``explainers.<name>.sanity`` (``"pass"``, ``"partly"``, ``"fail"`` or ``"not run"``, from the
parameter-randomisation test) and ``.trust_level`` (``"trusted"``, ``"weak"``,
``"not trusted"``), and ``accuracy`` (the overall accuracy as a number). A check may not read ``run``
(how the audit ran: it differs between runs of one plan, and a check's verdict must not).
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}
_CHECK = re.compile(
    r"""^\s*(?P<path>[A-Za-z_][\w\-@:/]*(?:\[\d+\])*(?:\.[\w\-@:/]+(?:\[\d+\])*)*)\s*
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
    if match["path"].split(".")[0].split("[")[0] == "run":
        raise ValueError(
            f"cannot check {match['path']!r}: `run` says how the audit ran (times, batch sizes, the cache, the "
            "machine), which differs between runs of the same plan; a check reads what the audit found"
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
