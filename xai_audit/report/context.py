"""Turn ``results.json`` data and the report artifacts into template data.

Templates do layout, not arithmetic: every percentage, p-value, confidence
interval and file size is formatted here, every figure is drawn here, and the
templates receive plain strings, numbers, lists and data-URI images.

Strings from models, data sets and plugins are passed through unchanged:
the templates escape them (autoescape), so nothing here builds HTML.

Group-accuracy breakdowns are read as ``breakdown[attribute] = [row, ...]``
where a row holds the group value (``group``, ``value`` or the attribute's
own name), ``n``, ``accuracy`` and ``ci`` (``[lo, hi]``, or ``ci_low`` /
``ci_high``). A breakdown table that does not look like that is shown as a
plain table.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import numpy as np

from xai_audit.report import conclusions, discovery, display, explain_context, figures, scope, specs
from xai_audit.report.artifacts import ReportArtifacts

#: The report's sections, in order: (anchor id, heading). The summary is the verdict (the first two pages);
#: the body follows, one section per concern with its key figure; the appendix (APPENDIX) holds what is there to
#: be checked: every per-image grid, the detail tables, the provenance and the plan as run.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary of findings"),
    ("accuracy", "Accuracy and confusion matrix"),
    ("groups", "Per-group accuracy"),
    ("explanations", "Explanations"),
    ("discovery", "Discovery: cues nobody named"),
    ("hypotheses", "Hypotheses"),
    ("recommendations", "Recommended fine-tuning data"),
    ("failures", "What could not be run"),
    ("finding-details", "Findings in full"),
    ("explanation-details", "Explanations in detail"),
    ("hypothesis-details", "Hypotheses in detail"),
    ("recommendation-details", "Fine-tuning data, every row"),
    ("provenance", "Model and data provenance"),
    ("run", "How this audit ran"),
)
#: The sections of the appendix, lettered A, B, ... after the body's numbered ones.
APPENDIX = ("finding-details", "explanation-details", "hypothesis-details", "recommendation-details", "provenance",
            "run")

#: The titles that change when the data have no labels: what is measured is the model's own predictions.
UNLABELLED_TITLES = {"accuracy": "Predictions and confidence (no labels)", "groups": "Predictions per group"}

#: Samples drawn per explanation grid (rows).
MAX_GRID_ROWS = 12
#: Sample ids listed for a hypothesis's examples.
MAX_EXAMPLES = 12

GROUP_PLUGIN = "group-accuracy"
_VERDICTS = {"supported": "supported", "not supported": "not-supported", "inconclusive": "inconclusive",
             "not applicable": "not-applicable"}
_PROPORTION_WORDS = ("accuracy", "recall", "precision", "rate", "share", "agreement", "fraction", "proportion")
_DASH = "—"


def build_context(results: Mapping[str, Any], artifacts: ReportArtifacts) -> dict[str, Any]:
    """Everything the templates show, as plain, already formatted data."""
    classes = [str(c) for c in results.get("classes") or []]
    failures = list(results.get("failures") or [])
    errors = {str(f.get("step")): str(f.get("error", "")) for f in failures}
    labelled = _labelled(results)
    found = discovery.discovery(results)
    shown = [(anchor, title) for anchor, title in SECTIONS if anchor != "discovery" or found is not None]
    sections = _numbered(shown, labelled)
    hypotheses = results.get("hypotheses") or {}
    group_steps = {k: v for k, v in hypotheses.items() if v.get("plugin") == GROUP_PLUGIN}
    other_steps = {k: v for k, v in hypotheses.items() if v.get("plugin") != GROUP_PLUGIN}
    tool = results.get("tool") or {}
    overview = explain_context.overview(results, artifacts, classes)
    return {
        "title": display.clip(str(results.get("title") or "Model audit"), display.TITLE_LIMIT),
        "tool": " ".join(str(p) for p in (tool.get("name", "xai-audit"), tool.get("version")) if p),
        "schema_version": str(results.get("schema_version", "")),
        "date": _date((results.get("run") or {}).get("finished") or (results.get("run") or {}).get("started")),
        "run_time": _run_time((results.get("run") or {}).get("started"), (results.get("run") or {}).get("finished")),
        "toc": sections,
        "section": {s["id"]: s for s in sections},
        "summary": _summary(results, failures, {x["id"]: x["number"] for x in sections}.get("failures", "")),
        "system": scope.system(results),
        "limitations": scope.limitations(results),
        "provenance": _provenance(results),
        "accuracy": _accuracy(results, classes),
        "groups": _groups(group_steps, results, errors),
        "explainers": _explainers(results.get("explainers") or {}, artifacts, classes, errors,
                                  set(overview["grid_names"])),
        "explanation_overview": overview,
        "discovery": found,
        "hypotheses": _hypotheses(other_steps, errors, artifacts),
        "recommendations": conclusions.recommendations(results),
        "failures": _failures(failures, results.get("skipped_samples") or []),
        "run": _run(results),
        "checks": _checks(results.get("checks") or []),
        "verdict": _verdict(results),
        "document": document_metadata(results),
        "paper": "letter" if ((results.get("plan") or {}).get("report") or {}).get("paper") == "letter" else "A4",
    }


def document_metadata(results: Mapping[str, Any]) -> dict[str, str | None]:
    """The PDF's (and HTML's) title, author and subject: the report's title, the system's provider and its
    intended purpose, each ``None`` where results.json does not state it (never invented)."""
    system = results.get("system") if isinstance(results.get("system"), Mapping) else {}
    plan_system = (results.get("plan") or {}).get("system") if isinstance(results.get("plan"), Mapping) else None
    if not system and isinstance(plan_system, Mapping):
        system = plan_system

    def text(value: Any) -> str | None:
        if isinstance(value, Mapping):  # e.g. provider: {name: ..., contact: ...}
            value = value.get("name")
        return str(value).strip() or None if value not in (None, "") else None

    return {
        "title": str(results.get("title") or "Model audit"),
        "author": text(system.get("provider")),
        "subject": text(system.get("intended_purpose")),
        "created": _iso_utc((results.get("run") or {}).get("finished") or (results.get("run") or {}).get("started")),
    }


def _iso_utc(value: Any) -> str | None:
    moment = _parse_time(value)
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _numbered(shown: Sequence[tuple[str, str]], labelled: bool) -> list[dict[str, Any]]:
    """The sections shown, the body's numbered 1, 2, ... and the appendix's lettered A, B, ..."""
    body = [pair for pair in shown if pair[0] not in APPENDIX]
    appendix = [pair for pair in shown if pair[0] in APPENDIX]
    numbers = [str(n) for n in range(1, len(body) + 1)] + [chr(ord("A") + k) for k in range(len(appendix))]
    return [
        {"id": anchor, "number": number, "title": title if labelled else UNLABELLED_TITLES.get(anchor, title),
         "appendix": anchor in APPENDIX}
        for number, (anchor, title) in zip(numbers, body + appendix)
    ]


def _labelled(results: Mapping[str, Any]) -> bool:
    """Whether the audited data have labels (accuracy can be measured); without, the report speaks of predictions."""
    samples = results.get("samples") or {}
    return bool(samples["labelled"]) if "labelled" in samples else results.get("accuracy") is not None


def _unlabelled_predictions(results: Mapping[str, Any], classes: list[str]) -> dict[str, Any]:
    """What is measured without labels: each class's share of the predictions and the model's confidence."""
    per_sample = results.get("per_sample") or {}
    preds = [int(p) for p in per_sample.get("predictions") or []]
    confidence = [float(c) for c in per_sample.get("confidence") or []]
    rows = []
    for k, name in enumerate(classes):
        mine = [c for p, c in zip(preds, confidence) if p == k]
        rows.append({"name": name, "count": len(mine), "share": len(mine) / len(preds) if preds else None,
                     "confidence": sum(mine) / len(mine) if mine else None})
    top = max(rows, key=lambda r: r["count"]) if rows and preds else None
    mean = sum(confidence) / len(confidence) if confidence else None
    line = ""
    if top is not None:
        line = (f"no labels: the model's own predictions are measured; mean confidence {_pct(mean)}, most often "
                f"predicted '{top['name']}' ({_pct(top['share'])} of {_int(len(preds))} images)")
    return {"rows": rows, "mean_confidence": mean, "line": line or "no labels: the model's own predictions are measured"}


def _verdict(results: Mapping[str, Any]) -> dict[str, Any]:
    """One line a reviewer can act on, from the checks, the findings and what did not run; ``incomplete`` is the
    banner above it when a planned step did not run (None otherwise), and then the line is never "clean"."""
    checks = results.get("checks") or []
    failed = [c for c in checks if c.get("status") == "FAIL"]
    findings = results.get("findings") or []
    high = [f for f in findings if f.get("severity") == "high"]
    verdict = _verdict_line(results, checks, failed, findings, high)
    verdict["incomplete"] = scope.incomplete(results)
    if verdict["incomplete"] is not None and verdict["level"] == "ok":  # never clean when a planned step is missing
        verdict.update(level="attention", label="Incomplete",
                       text="No hypothesis that ran reached significance after correction, but not every planned "
                            "step ran: the audit cannot say what those would have found.")
    return verdict


def _verdict_line(results: Mapping[str, Any], checks: list, failed: list, findings: list, high: list) -> dict[str, Any]:
    not_run = len(results.get("failures") or [])
    tail = f" {not_run} step(s) could not run; see the last section." if not_run else ""
    if failed:
        return {"level": "fail", "label": "Does not pass",
                "text": f"{len(failed)} of {len(checks)} checks failed: {failed[0].get('check')}." + tail}
    if high:
        return {"level": "attention", "label": "Needs attention",
                "text": f"{len(high)} high-severity finding(s), first: {high[0].get('title')}" + tail}
    if findings:
        return {"level": "attention", "label": "Review the findings",
                "text": f"{len(findings)} finding(s) of lower severity; no check failed." + tail}
    return {"level": "ok", "label": "No significant finding",
            "text": ("Every check passed; " if checks else "") + "no hypothesis reached significance after correction. "
            "That is not evidence of no effect: see what this audit could not establish." + tail}


def _checks(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The plan's checks as the summary shows them: PASS / WARN / FAIL with what was found."""
    counts = {status: sum(r.get("status") == status for r in rows) for status in ("PASS", "WARN", "FAIL")}
    return {
        "rows": [
            {"check": str(r.get("check")), "status": str(r.get("status")), "status_class": str(r.get("status")).lower(),
             "actual": _value(r.get("actual")), "reason": str(r.get("reason") or "")}
            for r in rows
        ],
        "line": ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "no checks in the plan",
        "failed": counts["FAIL"] > 0,
    }


# -- sections ----------------------------------------------------------------


def _summary(results: Mapping[str, Any], failures: list[dict], failures_number: str = "") -> dict[str, Any]:
    provenance = results.get("provenance") or {}
    model = provenance.get("model") or {}
    dataset = provenance.get("dataset") or {}
    samples = results.get("samples") or {}
    accuracy = results.get("accuracy")

    model_parts = [str(model.get("adapter") or "unknown adapter")]
    if model.get("description"):
        model_parts.append(_short_description(model["description"]))
    if model.get("fingerprint"):
        model_parts.append(f"fingerprint {_short_hash(model['fingerprint'])}")

    data_parts = [str(dataset.get("loader") or "unknown loader")]
    if samples.get("n") is not None:
        labelled = "labelled" if samples.get("labelled") else "unlabelled"
        data_parts.append(f"{_int(samples['n'])} samples audited, {labelled}")
    if dataset.get("fingerprint"):
        data_parts.append(f"fingerprint {_short_hash(dataset['fingerprint'])}")

    n_failed = len(failures)
    if n_failed == 0:
        failures_line = "Every step ran."
    else:
        steps = "step" if n_failed == 1 else "steps"
        failures_line = f"{n_failed} {steps} could not run (see section {failures_number})."
    return {
        "model_line": " · ".join(model_parts),
        "data_line": " · ".join(data_parts),
        "accuracy": _accuracy_with_ci(accuracy) if accuracy else None,
        "accuracy_label": "Accuracy" if accuracy else "Predictions",
        "accuracy_note": (
            f"95 % Wilson interval, n = {_int(accuracy.get('n'))}" if accuracy else
            _unlabelled_predictions(results, [str(c) for c in results.get("classes") or []])["line"]
        ),
        "conclusions": conclusions.findings(results),
        "no_findings_text": "No finding reached significance.",
        "n_failures": n_failed,
        "failures_line": failures_line,
    }


def _provenance(results: Mapping[str, Any]) -> dict[str, Any]:
    provenance = results.get("provenance") or {}
    model = provenance.get("model") or {}
    dataset = provenance.get("dataset") or {}
    samples = results.get("samples") or {}
    model_description = model.get("description")
    data_description = dataset.get("description")
    return {
        "model": {
            "adapter": str(model.get("adapter") or _DASH),
            "description_text": model_description if isinstance(model_description, str) else None,
            "description": _key_values(model_description) if isinstance(model_description, Mapping) else [],
            "fingerprint": str(model.get("fingerprint") or _DASH),
            "files": [
                {
                    "path": str(f.get("path", "")),
                    "sha256": str(f.get("sha256") or _DASH),
                    "size": _bytes(f.get("bytes")),
                }
                for f in model.get("files") or []
            ],
        },
        "dataset": {
            "loader": str(dataset.get("loader") or _DASH),
            "description_text": data_description if isinstance(data_description, str) else None,
            "description": _key_values(data_description) if isinstance(data_description, Mapping) else [],
            "fingerprint": str(dataset.get("fingerprint") or _DASH),
            "files_manifest_sha256": str(dataset.get("files_manifest_sha256") or _DASH),
            "n_files": _int(dataset.get("n_files")),
        },
        "samples": [
            {"key": "samples audited", "value": _int(samples.get("n")), "hash": False},
            {"key": "labelled", "value": _yes_no(samples.get("labelled")), "hash": False},
            {"key": "ids sha256", "value": str(samples.get("ids_sha256") or _DASH), "hash": True},
        ],
        "plan_text": _plan_text(results.get("plan") or {}),
        **_plan_file(results),
        "seed": _int(results.get("seed")),
        "plugins": [
            {
                "kind": str(p.get("kind", "")),
                "name": str(p.get("name", "")),
                "version": str(p.get("version") or _DASH),
                "package": str(p.get("package") or _DASH),
            }
            for p in provenance.get("plugins") or []
        ],
        "environment": _key_values(provenance.get("environment") or {}),
        "schema_version": str(results.get("schema_version") or _DASH),
    }


def _run(results: Mapping[str, Any]) -> dict[str, Any]:
    """How the audit ran (results.json's ``run``): times, the machine, the cache, batch sizes. None of it is a
    result, and no number of the report depends on it."""
    run = results.get("run") or {}
    machine = run.get("machine") or {}
    cache = run.get("cache") or {}
    executor = run.get("executor") or {}
    seconds = run.get("seconds")
    facts = [
        {"key": "started", "value": str(run.get("started") or _DASH)},
        {"key": "finished", "value": str(run.get("finished") or _DASH)},
        {"key": "wall time", "value": f"{float(seconds):.1f} s" if isinstance(seconds, (int, float)) else _DASH},
        {"key": "executor", "value": f"{executor.get('kind', 'local')}, {_int(executor.get('workers', 1))} worker(s)"},
        {"key": "cache", "value": (
            f"{_int(cache.get('hits', 0))} step(s) reused from the cache, {_int(cache.get('misses', 0))} computed"
            + (f" ({cache['dir']})" if cache.get("dir") else " (no cache)"))},
    ]
    facts += [{"key": key.replace("_", " "), "value": str(machine[key])}
              for key in ("host", "platform", "cpu", "cpu_count", "torch", "torch_threads", "numpy", "device", "numerics")
              if machine.get(key) is not None]
    fine_tune = run.get("fine_tune") or {}
    if fine_tune:
        facts.append({"key": "fine-tune (demo --verify)",
                      "value": "reused from the cache" if fine_tune.get("cached") else f"{float(fine_tune.get('seconds') or 0):.0f} s"})
    steps = []
    for name, step in (run.get("steps") or {}).items():
        step = step if isinstance(step, Mapping) else {}
        batching = step.get("batching") or {}
        steps.append({
            "step": str(name),
            "seconds": f"{float(step.get('seconds') or 0):.2f}",
            "cached": {True: "yes", False: "no"}.get(step.get("cached"), _DASH),
            "batching": ", ".join(f"{str(k).replace('_', ' ')} {v}" for k, v in batching.items()) or _DASH,
        })
    batches = [
        {"mode": str(b.get("mode", "")), "shape": "×".join(str(d) for d in b.get("image_shape") or []),
         "size": _int(b.get("size")), "source": str(b.get("source", "")), "layout": str(b.get("layout", "")),
         "invariant": {True: "yes", False: "no"}.get(b.get("batch_invariant"), _DASH)}
        for b in run.get("batching") or [] if isinstance(b, Mapping)
    ]
    return {"facts": facts, "steps": steps, "batching": batches, "schema_version": str(results.get("schema_version") or _DASH)}


def _accuracy(results: Mapping[str, Any], classes: list[str]) -> dict[str, Any]:
    accuracy = results.get("accuracy")
    colors = figures.class_colors(classes)
    per_class = [
        {
            "name": str(row.get("class", "")),
            "color": colors.get(str(row.get("class", "")), "#9aa5b1"),
            "n": _int(row.get("n")),
            "recall": _pct(row.get("recall")),
            "precision": _pct(row.get("precision")),
            "predicted_share": _pct(row.get("predicted_share")),
        }
        for row in results.get("per_class") or []
    ]
    matrix = results.get("confusion_matrix")
    confusion = None
    if matrix and classes:
        confusion = {
            "src": figures.confusion_matrix_figure(matrix, classes),
            "alt": (
                f"Confusion matrix of {len(classes)} classes: rows are true classes, "
                "columns predicted classes; each cell shows a count, its colour the share of its row."
            ),
            "caption": (
                "Confusion matrix. Rows: true class; columns: predicted class. Numbers are counts; "
                "colour is the share of the row, so a dark off-diagonal cell is a class the model "
                "mostly mistakes for another."
            ),
            "samples": [],
        }
    unlabelled = None
    if accuracy is None:
        unlabelled = [
            {"name": r["name"], "color": colors.get(r["name"], "#9aa5b1"), "count": _int(r["count"]),
             "share": _pct(r["share"]), "confidence": _pct(r["confidence"])}
            for r in _unlabelled_predictions(results, classes)["rows"]
        ]
    return {
        "available": accuracy is not None,
        "text": _accuracy_with_ci(accuracy) if accuracy else None,
        "n": _int(accuracy.get("n")) if accuracy else _DASH,
        "correct": _int(accuracy.get("correct")) if accuracy else _DASH,
        "unavailable_text": (
            "The audited data have no labels, so whatever needs a true class cannot be computed. What is "
            "measured is the model's own behaviour: how many images it assigns to each class, and how confident "
            "it is in them. Every hypothesis compares the model with its own predictions on the clean images."
        ),
        "per_class": per_class if accuracy is not None else [],
        "unlabelled": unlabelled,
        "confusion": confusion,
    }


def _groups(steps: Mapping[str, Any], results: Mapping[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    overall = (results.get("accuracy") or {}).get("value")
    items = []
    for index, (name, step) in enumerate(steps.items()):
        item = _hypothesis_common(name, step, errors, prefix="group", index=index)
        attributes, others = [], []
        for attribute, rows in (step.get("breakdown") or {}).items():
            groups = _group_rows(str(attribute), rows)
            if groups is None:
                others.append(_table(str(attribute), rows))
                continue
            attributes.append({
                "name": str(attribute),
                "rows": [
                    {"value": g["label"], "n": _int(g["n"]), "accuracy": _pct(g["accuracy"]),
                     "ci": _ci_pct(g["ci"])}
                    for g in groups
                ],
                "figure": {
                    "src": figures.group_accuracy_figure(groups, str(attribute), overall),
                    "alt": (
                        f"Bar chart of accuracy for each value of {attribute}, with 95 % confidence "
                        "intervals as error bars" + ("; dashed line: overall accuracy." if overall is not None else ".")
                    ),
                    "caption": (
                        f"Accuracy by {attribute}. Error bars: 95 % confidence interval; "
                        "wide bars mean few samples, so read small groups with care."
                    ),
                    "samples": [],
                },
            })
        item["attributes"] = attributes
        item["tables"] = others
        item["gap"] = item.pop("effect")
        items.append(item)
    return {"steps": items, "empty_text": "No group analysis (group-accuracy) was in the plan."}


def _explainers(
    steps: Mapping[str, Any], artifacts: ReportArtifacts, classes: list[str], errors: dict[str, str],
    in_case_grids: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    items = []
    for index, (name, step) in enumerate(steps.items()):
        status = str(step.get("status", "ok"))
        explanation = artifacts.explanations.get(name)
        scalars = step.get("scalars") or (explanation.scalars if explanation else {})
        tables = step.get("tables") or (explanation.tables if explanation else {})
        notes = step.get("notes") or (explanation.notes if explanation else [])
        item = {
            "id": _anchor("explainer", name, index),
            "name": str(name),
            "plugin": str(step.get("plugin") or _DASH),
            "status": status,
            "failed": status != "ok",
            "error": errors.get(name, "") or str(step.get("error") or ""),
            "options": _key_values(step.get("options") or {}),
            "n_samples": _int(step.get("n_samples")),
            "notes": [str(n) for n in notes],
            "scalars": _key_values(scalars),
            "tables": [_table(explain_context.table_title(str(k)), v) for k, v in tables.items()],
            "figure": None,
            "figure_missing_text": "",
            "extra_figures": _spec_figures(explanation.figures, explanation.arrays) if explanation else [],
            "trust": explain_context.trust_summary(step),
        }
        if status == "ok" and name in in_case_grids:
            item["figure_missing_text"] = (
                "Its map of every explained image is in the case-by-case grids above, beside the other explainers'."
            )
        elif status == "ok":
            item["figure"] = _explanation_figure(name, explanation, artifacts, classes,
                                                 explain_context.sample_trust_lines(step))
            if item["figure"] is None:
                item["figure_missing_text"] = (
                    "The attribution maps of this step were not available to the report "
                    "(for example a run read back from results.json alone)."
                )
        items.append(item)
    return {"steps": items, "empty_text": "No explainer was in the plan."}


def _spec_figures(figure_specs: Sequence[Mapping[str, Any]], arrays: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Figures a plugin described as data; one that cannot be drawn says why instead."""
    out = []
    for spec in figure_specs:
        try:
            out.append(specs.render_spec(spec, arrays))
        except Exception as exc:  # a bad spec must not lose the rest of the report
            out.append({"src": None, "alt": "", "caption": f"Figure {spec.get('title', '')!s} could not be drawn: {exc}",
                        "samples": []})
    return out


def _hypotheses(steps: Mapping[str, Any], errors: dict[str, str], artifacts: ReportArtifacts) -> dict[str, Any]:
    items = []
    for index, (name, step) in enumerate(steps.items()):
        item = _hypothesis_common(name, step, errors, prefix="hypothesis", index=index)
        item["tables"] = [_table(str(k), v) for k, v in (step.get("breakdown") or {}).items()]
        result = artifacts.hypotheses.get(name)
        specs_ = list(result.figures) if result else []
        # a plugin's key figures stand in the body for the before/after chart; the rest go to the appendix
        key = [spec for spec in specs_ if spec.get("key")]
        item["key_figures"] = _spec_figures(key, result.arrays) if key else []
        item["extra_figures"] = _spec_figures([s for s in specs_ if not s.get("key")], result.arrays) if result else []
        item["key_tables"] = _key_tables(step)
        item["figure"] = None
        if not item["failed"] and not key and any(step.get(k) is not None for k in ("before", "after", "effect")):
            metric = str(step.get("metric") or "metric")
            item["figure"] = {
                "src": figures.hypothesis_figure(
                    metric, step.get("before"), step.get("after"), step.get("effect"),
                    step.get("ci"), percent=item["percent"],
                ),
                "alt": (
                    f"Left: {metric} before ({item['before']}) and after ({item['after']}) the intervention. "
                    f"Right: the effect {item['effect']} with its 95 % confidence interval."
                ),
                "caption": (
                    f"{name}: {metric} before and after, and the effect with its 95 % confidence interval. "
                    "An interval that excludes zero is a change larger than chance."
                ),
                "samples": [],
            }
        items.append(item)
    return {"steps": items, "empty_text": "No hypothesis other than group accuracy was in the plan."}


#: rows of a key table shown in the body (the appendix has them all)
KEY_TABLE_ROWS = 5


def _key_tables(step: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The breakdown tables a plugin names in ``key_tables``, cut to their first rows, for the body."""
    breakdown = step.get("breakdown") or {}
    out = []
    for name in step.get("key_tables") or []:
        rows = breakdown.get(name)
        if not isinstance(rows, list) or not rows:
            continue
        title = str(name) + (f" (the first {KEY_TABLE_ROWS} of {len(rows)}; all in the appendix)"
                             if len(rows) > KEY_TABLE_ROWS else "")
        out.append(_table(title, rows[:KEY_TABLE_ROWS]))
    return out


def _failures(failures: list[dict], skipped: list[dict] | None = None) -> dict[str, Any]:
    return {
        "skipped": [{"index": _int(s.get("index")), "error": str(s.get("error", ""))} for s in skipped or []],
        "rows": [
            {
                "step": str(f.get("step", "")),
                "plugin": str(f.get("plugin") or _DASH),
                "error": str(f.get("error", "")),
            }
            for f in failures
        ],
        "empty_text": "Every step ran.",
    }


# -- pieces --------------------------------------------------------------------


def _hypothesis_common(
    name: str, step: Mapping[str, Any], errors: dict[str, str], prefix: str, index: int
) -> dict[str, Any]:
    status = str(step.get("status", "ok"))
    metric = str(step.get("metric") or "")
    percent = _is_proportion(metric, step.get("before"), step.get("after"))
    verdict = str(step.get("verdict") or "not computed")
    examples = [str(e) for e in step.get("examples") or []]
    return {
        "id": _anchor(prefix, name, index),
        "name": str(name),
        "plugin": str(step.get("plugin") or _DASH),
        "status": status,
        "failed": status != "ok",
        "error": errors.get(name, "") or str(step.get("error") or ""),
        "options": _key_values(step.get("options") or {}),
        "claim": str(step.get("claim") or ""),
        "metric": metric or _DASH,
        "percent": percent,
        "before": _metric(step.get("before"), percent),
        "after": _metric(step.get("after"), percent),
        "effect": _effect_with_ci(step.get("effect"), step.get("ci"), percent),
        "test": str(step.get("test") or _DASH),
        "p_value": _p(step.get("p_value")),
        "p_value_adjusted": _p(step.get("p_value_adjusted")) if step.get("p_value_adjusted") is not None else None,
        "verdict": verdict,
        "verdict_class": _VERDICTS.get(verdict.lower(), "unknown"),
        "not_applicable": (
            f"{(step.get('details') or {}).get('reason') or 'Not applicable.'} It is not a test, so it is kept out "
            "of the audit's Holm correction." if verdict == "not applicable" else ""),
        "n": _int(step.get("n")),
        "examples": examples[:MAX_EXAMPLES],
        "examples_more": (
            f"and {len(examples) - MAX_EXAMPLES} more" if len(examples) > MAX_EXAMPLES else ""
        ),
        "details": _key_values(step.get("details") or {}),
        "tests_table": conclusions.tests_table(step),
        "shortcut_line": conclusions.shortcut_line(step),
        "subject_lines": conclusions.subject_lines(step),
        "warnings": [str(w) for w in step.get("warnings") or []],
        "suggested": (
            f"Not in the plan: suggested by the {step['suggested_by']} explainer ({step.get('why') or 'no reason given'}) "
            "and tested in the same audit, counted in its Holm correction."
            if step.get("suggested_by") else ""
        ),
    }


def _group_rows(attribute: str, rows: Any) -> list[dict[str, Any]] | None:
    """Rows of a group-accuracy breakdown as {label, n, accuracy, ci}, or None.

    Only a table of each group's accuracy with its interval is one: a table that also holds a group's
    accuracy but says something else of it (the equivalence test's difference, 90 % CI, TOST p and power)
    has columns this form would drop, so it is shown as the table it is."""
    if not isinstance(rows, list) or not rows:
        return None
    groups = []
    for row in rows:
        if not isinstance(row, Mapping) or "accuracy" not in row or "n" not in row:
            return None
        label = next((row[k] for k in ("group", "value", attribute, "name") if k in row), None)
        if label is None:
            return None
        ci = row.get("ci")
        if ci is None and row.get("ci_low") is not None and row.get("ci_high") is not None:
            ci = (row["ci_low"], row["ci_high"])
        if ci is None:
            return None
        groups.append({"label": str(label), "n": row["n"], "accuracy": row["accuracy"], "ci": ci})
    return groups


def _explanation_figure(
    name: str, explanation: Any, artifacts: ReportArtifacts, classes: list[str],
    trust_lines: Mapping[str, str] | None = None,
) -> dict[str, Any] | None:
    if explanation is None or explanation.maps is None or len(explanation.sample_ids) == 0:
        return None
    rows = [i for i, sid in enumerate(explanation.sample_ids) if sid in artifacts.images][:MAX_GRID_ROWS]
    if not rows:
        return None
    ids = [str(explanation.sample_ids[i]) for i in rows]
    targets = np.asarray(explanation.targets).reshape(-1)
    titles = []
    explains_prediction = True
    for i, sid in zip(rows, ids):
        label = artifacts.labels.get(sid)
        prediction = artifacts.predictions.get(sid)
        true_name = _clip(_class_name(classes, label), 16) if label is not None else "unlabelled"
        lines = [_clip(sid, 24), f"true: {true_name}"]
        if prediction is not None:
            predicted, probability = prediction
            wrong = " – wrong" if label is not None and int(label) != int(predicted) else ""
            lines.append(f"pred: {_clip(_class_name(classes, predicted), 16)} ({float(probability):.2f}){wrong}")
            if i < len(targets) and int(targets[i]) != int(predicted):
                explains_prediction = False
                lines.append(f"explained: {_clip(_class_name(classes, int(targets[i])), 16)}")
        if trust_lines and sid in trust_lines:
            lines.append(trust_lines[sid])
        titles.append("\n".join(lines))
    maps = np.asarray(explanation.maps)[rows]
    signed = bool(explanation.signed)
    scale = figures.robust_scale([maps])
    src = figures.explanation_grid([artifacts.images[sid] for sid in ids], {name: maps}, titles, signed)
    target = "the predicted class" if explains_prediction else "the explained class named in each row"
    if signed:
        reading = (
            f"Red = pushes toward {target}, blue = against; "
            f"one colour scale for the whole figure (±{scale:.3g}, the 99th percentile of |attribution|)."
        )
    else:
        reading = (
            f"Brighter = more important for {target}; "
            f"one colour scale for the whole figure (0 to {scale:.3g}, the 99th percentile of the attribution)."
        )
    shown = "the attribution"
    if getattr(explanation, "maps_caption", ""):  # maps that are not attributions say what they are
        shown = str(explanation.maps_caption)
        reading = f"Brighter = larger; one colour scale for the whole figure (0 to {scale:.3g}, the 99th percentile)."
    return {
        "src": src,
        "alt": (
            f"{name} {'maps' if shown != 'the attribution' else 'attributions'} for {len(ids)} samples "
            f"({', '.join(ids)}): each row shows the image, then {shown} {'' if shown != 'the attribution' else 'map '}"
            "over a grayscale copy of it."
        ),
        "caption": f"{name}. Each row is one sample: the image, then {shown} over its grayscale copy. {reading}",
        "samples": ids,
    }


def _table(title: str, rows: Any) -> dict[str, Any]:
    """Row dicts as {title, columns: [{label, num, short}], rows: [[{text, num}]]}; keys become columns."""
    rows = [r for r in rows or [] if isinstance(r, Mapping)]
    columns: list[str] = []
    for row in rows:
        for key in row:
            if str(key) not in columns:
                columns.append(str(key))
    body = []
    for row in rows:
        lookup = {str(k): v for k, v in row.items()}
        body.append([_cell(lookup.get(column)) for column in columns])
    numeric = [
        any(cells[i]["num"] for cells in body)
        and all(cells[i]["num"] or cells[i]["text"] == _DASH for cells in body)
        for i in range(len(columns))
    ]
    return {
        "title": title,
        # a long name as a header (a class name) is cut short there and named whole below the table
        "columns": [{"label": c, "num": n, "short": display.column_header(c)} for c, n in zip(columns, numeric)],
        "rows": body,
    }


def _cell(value: Any) -> dict[str, Any]:
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return {"text": _value(value), "num": numeric}


def _key_values(mapping: Any) -> list[dict[str, str]]:
    if not isinstance(mapping, Mapping):
        return []
    return [{"key": str(k), "value": _value(v)} for k, v in mapping.items()]


# -- formatting ----------------------------------------------------------------


def _value(value: Any) -> str:
    """Any plain JSON value as short display text."""
    if value is None:
        return _DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return _int(value)
    if isinstance(value, (float, np.floating)):
        return _float(float(value))
    if isinstance(value, str):
        return value
    text = _nested(value, _VALUE_LIMIT + 1)
    return text if len(text) <= _VALUE_LIMIT else text[: _VALUE_LIMIT - 1] + "…"


#: characters of one value the report shows in a table cell or a key-value line (the whole is in results.json)
_VALUE_LIMIT = 240


def _nested(value: Any, budget: int) -> str:
    """A list or mapping (of lists, mappings, numbers, strings) as display text: numbers as :func:`_value`
    shows them (four significant digits, not a float's seventeen), strings bare, a mapping as ``{key: value,
    ...}``; past ``budget`` characters the rest of a list or mapping is left out, an ellipsis in its place."""
    if isinstance(value, (Mapping, list, tuple)):
        items = ((f"{k}: ", v) for k, v in value.items()) if isinstance(value, Mapping) else (("", v) for v in value)
        parts, used = [], 2
        for prefix, v in items:
            if used > budget:
                parts.append("…")  # the rest left out, and said so
                break
            part = prefix + _nested(v, budget - used - len(prefix))
            parts.append(part)
            used += len(part) + 2
        return ("{%s}" if isinstance(value, Mapping) else "[%s]") % ", ".join(parts)
    if isinstance(value, str):
        return value if len(value) <= budget else value[:budget]
    if value is None or isinstance(value, (bool, int, float, np.integer, np.floating)):
        return _value(value)
    return str(value)[:budget]


def _float(value: float) -> str:
    if not math.isfinite(value):
        return _DASH
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.3e}"
    return f"{value:.4g}"


def _int(value: Any) -> str:
    if value is None:
        return _DASH
    try:
        return f"{int(value):,}".replace(",", "\u2009")
    except (TypeError, ValueError):
        return str(value)


def _pct(value: Any, decimals: int = 1) -> str:
    if value is None:
        return _DASH
    return f"{float(value) * 100:.{decimals}f} %"


def _ci_pct(ci: Any) -> str:
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return _DASH
    return f"[{float(ci[0]) * 100:.1f}, {float(ci[1]) * 100:.1f}]"


def _accuracy_with_ci(accuracy: Mapping[str, Any]) -> str:
    """``"91.2 % [89.0, 93.1]"``."""
    text = _pct(accuracy.get("value"))
    ci = accuracy.get("ci")
    return f"{text} {_ci_pct(ci)}" if ci else text


def _metric(value: Any, percent: bool) -> str:
    if value is None:
        return _DASH
    return _pct(value) if percent else _float(float(value))


def _effect_with_ci(effect: Any, ci: Any, percent: bool) -> str:
    """``"+29.2 pp [25.0, 33.1]"`` for proportions, ``"+0.412 [0.3, 0.52]"`` otherwise."""
    if effect is None:
        return _DASH
    if percent:
        text = f"{float(effect) * 100:+.1f} pp"
        if ci and ci[0] is not None and ci[1] is not None:
            text += f" [{float(ci[0]) * 100:+.1f}, {float(ci[1]) * 100:+.1f}]"
        return text
    text = f"{float(effect):+.3g}"
    if ci and ci[0] is not None and ci[1] is not None:
        text += f" [{float(ci[0]):+.3g}, {float(ci[1]):+.3g}]"
    return text


def _p(value: Any) -> str:
    """``"p < 0.001"``, ``"p = 0.034"``; a dash when not computed."""
    if value is None:
        return _DASH
    p = float(value)
    if not math.isfinite(p):
        return _DASH
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def _bytes(value: Any) -> str:
    if value is None:
        return _DASH
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return _DASH  # pragma: no cover


def _yes_no(value: Any) -> str:
    return _DASH if value is None else ("yes" if value else "no")


def _is_proportion(metric: str, *values: Any) -> bool:
    if not any(word in metric.lower() for word in _PROPORTION_WORDS):
        return False
    return all(v is None or 0.0 <= float(v) <= 1.0 for v in values)


def _short_hash(value: Any) -> str:
    text = str(value)
    prefix, _, digest = text.rpartition(":")
    digest = digest or text
    short = digest[:12] + ("…" if len(digest) > 12 else "")
    return f"{prefix}:{short}" if prefix else short


def _short_description(description: Any) -> str:
    if isinstance(description, Mapping):
        parts = [f"{k}: {_value(v)}" for k, v in list(description.items())[:3]]
        return ", ".join(parts)
    return _clip(str(description), 120)


def _plan_file(results: Mapping[str, Any]) -> dict[str, Any]:
    """The attached plan-as-run.yaml's sha256 and line count (the PDF names the file rather than printing it)."""
    import hashlib

    from xai_audit.report.tables import plan_as_run

    data = plan_as_run(results)
    return {"plan_sha256": hashlib.sha256(data).hexdigest(), "plan_lines": data.count(b"\n")}


def _plan_text(plan: Any) -> str:
    """The plan as YAML, each of its strings cut to PLAN_STRING_LIMIT, the whole to LONG_TEXT_LIMIT."""
    plan = display.for_display(plan, display.PLAN_STRING_LIMIT)
    try:
        import yaml

        text = yaml.safe_dump(plan, sort_keys=False, allow_unicode=True, default_flow_style=False, width=88).strip()
    except Exception:  # noqa: BLE001 - anything yaml cannot dump is shown as JSON
        text = json.dumps(plan, indent=2, ensure_ascii=False, default=str)
    return display.long_text(text)


def _date(value: Any) -> str:
    moment = _parse_time(value)
    return moment.strftime("%Y-%m-%d") if moment else (str(value) if value else _DASH)


def _run_time(started: Any, finished: Any) -> str:
    start, end = _parse_time(started), _parse_time(finished)
    if start is None:
        return _DASH
    text = start.strftime("%Y-%m-%d %H:%M")
    if end is None:
        return text + " UTC"
    seconds = max(0, int(round((end - start).total_seconds())))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    took = f"{hours} h {minutes} min" if hours else (f"{minutes} min {seconds} s" if minutes else f"{seconds} s")
    return f"{text}–{end.strftime('%H:%M')} UTC ({took})"


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _class_name(classes: Sequence[str], index: Any) -> str:
    try:
        return classes[int(index)]
    except (IndexError, TypeError, ValueError):
        return str(index)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _anchor(prefix: str, name: Any, index: int) -> str:
    """An HTML id made only of safe characters, unique by its index."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")[:40] or "step"
    return f"{prefix}-{index + 1}-{slug}"
