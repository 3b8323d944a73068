"""The report's tables as CSV, for people who want them in a spreadsheet, and the plan as run as YAML: the files
beside the report that carry its data."""

from __future__ import annotations

import csv
import io
from typing import Any, Iterable, Mapping


def _csv(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def _ci(ci: Any, k: int) -> Any:
    return ci[k] if isinstance(ci, (list, tuple)) and len(ci) == 2 else None


def csv_tables(results: Mapping[str, Any]) -> dict[str, str]:
    """File name -> CSV text for each table of the results."""
    classes = list(results.get("classes") or [])
    tables = {
        "per_class.csv": _csv(
            ["class", "n", "recall", "precision", "predicted_share"],
            ([r.get("class"), r.get("n"), r.get("recall"), r.get("precision"), r.get("predicted_share")]
             for r in results.get("per_class") or []),
        ),
        "hypotheses.csv": _csv(
            ["step", "plugin", "status", "claim", "metric", "before", "after", "effect", "ci_low", "ci_high",
             "p_value", "p_value_adjusted", "verdict", "n", "test"],
            ([name, e.get("plugin"), e.get("status"), e.get("claim"), e.get("metric"), e.get("before"), e.get("after"),
              e.get("effect"), _ci(e.get("ci"), 0), _ci(e.get("ci"), 1), e.get("p_value"), e.get("p_value_adjusted"),
              e.get("verdict"), e.get("n"), e.get("test")]
             for name, e in (results.get("hypotheses") or {}).items()),
        ),
        "findings.csv": _csv(
            ["severity", "title", "detail", "source"],
            ([f.get("severity"), f.get("title"), f.get("detail"), f.get("source")] for f in results.get("findings") or []),
        ),
        "checks.csv": _csv(
            ["status", "check", "severity", "actual", "reason"],
            ([c.get("status"), c.get("check"), c.get("severity"), c.get("actual"), c.get("reason")]
             for c in results.get("checks") or []),
        ),
        "failures.csv": _csv(
            ["step", "plugin", "error"], ([f.get("step"), f.get("plugin"), f.get("error")] for f in results.get("failures") or [])
        ),
    }
    matrix = results.get("confusion_matrix")
    if matrix:
        tables["confusion_matrix.csv"] = _csv(["true \\ predicted", *classes], ([classes[i], *row] for i, row in enumerate(matrix)))
    for name, entry in (results.get("hypotheses") or {}).items():
        for title, rows in (entry.get("breakdown") or {}).items():
            if isinstance(rows, list) and rows and all(isinstance(r, Mapping) for r in rows):
                header = list(dict.fromkeys(k for r in rows for k in r))
                slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{name}__{title}")
                tables[f"{slug}.csv"] = _csv(header, ([_plain(r.get(k)) for k in header] for r in rows))
    return tables


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return value


def plan_as_run(results: Mapping[str, Any]) -> bytes:
    """The plan as the audit ran it, as YAML (it reads back as the same plan: ``xai-audit verify --rerun``)."""
    import yaml

    text = yaml.safe_dump(results.get("plan") or {}, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return text.encode("utf-8", "backslashreplace")
