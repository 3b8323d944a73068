"""Stage 4b, judging the hypotheses: one Holm correction across every test of the audit."""

from __future__ import annotations

from typing import Any

from xai_audit.contract.stats import ALPHA, holm

#: the verdict of a test that could not change what the model receives: stated with its reason, never corrected
NOT_APPLICABLE = "not applicable"


def not_applicable(hypotheses: dict[str, Any]) -> list[str]:
    """The hypotheses whose verdict is "not applicable" (kept out of the Holm correction)."""
    return [name for name, entry in hypotheses.items()
            if entry.get("status") == "ok" and entry.get("verdict") == NOT_APPLICABLE]


def correct_for_multiple_tests(hypotheses: dict[str, Any]) -> int:
    """Holm correction across every test of the audit; verdicts follow the adjusted p-value.

    Every test counts once: each hypothesis's own test and each of its further ``tests``. A test whose
    verdict is "not applicable" (an intervention that cannot reach the model's input) is no test: it stays
    out of the family. Returns the number of tests in the family.
    """
    entries: list[dict[str, Any]] = []
    for entry in hypotheses.values():
        if entry["status"] != "ok":
            continue
        entries += [e for e in [entry, *(entry.get("tests") or [])]
                    if e.get("p_value") is not None and e.get("verdict") != NOT_APPLICABLE]
    adjusted = holm([e["p_value"] for e in entries])
    for entry, p_adj in zip(entries, adjusted):
        entry["p_value_adjusted"] = p_adj
        if entry["verdict"] == "supported" and p_adj is not None and p_adj >= ALPHA:
            entry["verdict"] = "not supported"
            entry.setdefault("details", {})["note"] = "significant alone, not after Holm correction"
    for entry in hypotheses.values():
        entry.setdefault("p_value_adjusted", None)
        for test in entry.get("tests") or []:
            test.setdefault("p_value_adjusted", None)
    return len(entries)
