"""A Hugging Face model card from results.json: README.md with YAML metadata and ``model-index`` results.

Written beside the report when the plan's ``report.formats`` (or ``xai-audit run --formats``) lists
``card``, so the audit lands where a model's users already look. The metadata is built with
``huggingface_hub``'s card tools (``ModelCardData``, ``EvalResult``: the ``model-index`` of the card) and
the card is read back with ``ModelCard`` before it is written, so a card the Hub would refuse is never
written. Nothing is fetched: no Hub call, no network.

What the card holds, each from results.json and nothing else:

* the system's purpose, users, deployment context, out-of-scope uses, provider, model version and
  responsible persons (results.json's ``system``: "Not stated" where it is absent, never filled in);
* accuracy with its 95 % interval; recall per class; accuracy per group (any hypothesis breakdown whose
  rows carry ``group``, ``n``, ``accuracy``, ``ci``); accuracy on every other data set (``dataset-shift``);
  each one also a ``model-index`` metric, its interval and count in ``args``;
* the findings, ranked as the report ranks them, and every hypothesis' verdict;
* the limitations: the provider's (``system.known_limitations``) and the audit's own (``limitations``);
* provenance: the model's files and the data's manifest by SHA-256, the plan's hash, the tool's version.

The body is ``model_card.md.j2``, looked up like every report template (a user's folder first), rendered
with ``StrictUndefined``; Python hands it plain strings already escaped for Markdown.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined

from xai_audit.errors import XaiAuditError

CARD_TEMPLATE = "model_card.md.j2"
CARD_NAME = "README.md"
TASK = "image-classification"
#: a model adapter -> the card's library_name (another adapter: none is claimed)
LIBRARIES = {"torch": "pytorch", "transformers": "transformers", "onnx": "onnx"}
NOT_STATED = "Not stated"


class CardError(XaiAuditError):
    """The model card could not be written (its metadata would not read back)."""


def _builtin_templates() -> Path:
    """The built-in templates (the folder render.builtin_template_dir names; the report renders the card, so the
    card cannot import the renderer)."""
    import importlib.resources

    try:
        return Path(str(importlib.resources.files("xai_audit_templates")))
    except ModuleNotFoundError:  # a source checkout that was not installed
        return Path(__file__).resolve().parents[2] / "templates"

#: the ``system`` fields the card shows, in order: (key, label)
SYSTEM_FIELDS = (
    ("intended_purpose", "Intended purpose"),
    ("intended_users", "Intended users"),
    ("deployment_context", "Deployment context"),
    ("out_of_scope_uses", "Out-of-scope uses"),
    ("provider", "Provider"),
    ("model_version", "Model version"),
    ("responsible_persons", "Responsible persons"),
)


def md(value: Any) -> str:
    """``value`` as inline Markdown text: one line, HTML escaped, Markdown's marks taken literally."""
    text = " ".join(str(value).split())
    text = html.escape(text, quote=False)
    return re.sub(r"([\\`*_\[\]|#])", r"\\\1", text)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def with_ci(value: float | None, ci: Sequence[float] | None, n: int | None = None) -> str:
    """``15.0 % (95 % CI 7.1-29.1 %, n = 40)``; the parts results.json lacks are left out."""
    text = percent(value)
    extra = []
    if ci and len(ci) == 2 and None not in ci:
        extra.append(f"95 % CI {100 * ci[0]:.1f}–{100 * ci[1]:.1f} %")
    if n is not None:
        extra.append(f"n = {n}")
    return text + (f" ({', '.join(extra)})" if extra else "")


def effect_text(effect: float | None, ci: Sequence[float] | None, metric: str) -> str:
    """A finding's effect as the report shows it: ``+12.0 pp [+5.0, +20.0]`` for a share or an accuracy,
    ``+0.412 [+0.3, +0.52]`` for any other metric."""
    if effect is None:
        return ""
    share = any(w in (metric or "") for w in ("accuracy", "share", "rate", "gap", "distance"))
    scale, unit, fmt = (100, " pp", "+.1f") if share else (1, "", "+.3g")
    text = f"{scale * float(effect):{fmt}}{unit}"
    if ci and len(ci) == 2 and None not in ci:
        text += f" [{scale * float(ci[0]):{fmt}}, {scale * float(ci[1]):{fmt}}]"
    return text


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _args(ci: Any, n: Any, **more: Any) -> dict[str, Any] | None:
    args: dict[str, Any] = {}
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        args.update({"ci_low": ci[0], "ci_high": ci[1], "ci_level": 0.95})
    if n is not None:
        args["n"] = n
    args.update({k: v for k, v in more.items() if v is not None})
    return args or None


# -- what the card says -----------------------------------------------------------


def system_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each system field with its label: ``text`` (one line), or ``items`` (a list), or NOT_STATED."""
    system = _dict(results.get("system"))
    rows = []
    for key, label in SYSTEM_FIELDS:
        value = system.get(key)
        if key == "responsible_persons" and value:
            items = [md(p.get("name", "")) + (f" ({md(p['role'])})" if p.get("role") else "")
                     for p in _list(value) if isinstance(p, dict)]
            rows.append({"label": label, "text": None, "items": items})
        elif isinstance(value, list) and value:
            rows.append({"label": label, "text": None, "items": [md(v) for v in value]})
        elif isinstance(value, dict) and value.get("name"):  # e.g. provider: {name, contact}
            rows.append({"label": label, "text": md(value["name"]), "items": []})
        elif isinstance(value, str) and value.strip():
            rows.append({"label": label, "text": md(value), "items": []})
        else:
            rows.append({"label": label, "text": NOT_STATED, "items": []})
    return rows


def group_tables(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Accuracy per group: every hypothesis breakdown whose rows carry group, n, accuracy (and ci)."""
    tables = []
    for name, entry in _dict(results.get("hypotheses")).items():
        for key, rows in _dict(_dict(entry).get("breakdown")).items():
            rows = [r for r in _list(rows) if isinstance(r, dict) and "group" in r and "accuracy" in r]
            if rows:
                tables.append({"hypothesis": name, "by": key, "rows": rows})
    return tables


def shift_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Accuracy on each other data set a ``dataset-shift`` step measured (labelled data only)."""
    out = []
    for name, entry in _dict(results.get("hypotheses")).items():
        entry = _dict(entry)
        if entry.get("kind") != "shift" or entry.get("metric") != "accuracy" or entry.get("after") is None:
            continue
        details = _dict(entry.get("details"))
        out.append({"hypothesis": name, "data_set": str(details.get("other_data_set") or name),
                    "loader": str(_dict(_dict(entry.get("options")).get("dataset")).get("loader") or "other"),
                    "accuracy": entry["after"], "ci": details.get("accuracy_other_ci"),
                    "n": entry.get("n"), "audited": entry.get("before")})
    return out


def eval_results(results: Mapping[str, Any]) -> list[Any]:
    """The ``model-index`` metrics: accuracy with its interval, recall per class, accuracy per group and on
    every other data set; intervals and counts in each metric's ``args``."""
    from huggingface_hub import EvalResult

    dataset = _dict(_dict(results.get("provenance")).get("dataset"))
    description = _dict(dataset.get("description"))
    here = {
        "task_type": TASK, "dataset_type": str(dataset.get("loader") or "audited"),
        "dataset_name": str(description.get("path") or description.get("source") or dataset.get("loader")
                            or "audited data"),
        "dataset_split": str(description["split"]) if description.get("split") is not None else None,
        "dataset_revision": dataset.get("fingerprint"),
    }
    out = []
    accuracy = _dict(results.get("accuracy"))
    if accuracy.get("value") is not None:
        out.append(EvalResult(**here, metric_type="accuracy", metric_name="accuracy", metric_value=accuracy["value"],
                              metric_args=_args(accuracy.get("ci"), accuracy.get("n"), correct=accuracy.get("correct"))))
    if accuracy:
        for row in _list(results.get("per_class")):
            if isinstance(row, dict) and row.get("recall") is not None:
                out.append(EvalResult(**here, metric_type="recall", metric_name=f"recall ({row['class']})",
                                      metric_value=row["recall"], metric_config=f"class={row['class']}",
                                      metric_args=_args(None, row.get("n"), **{"class": row["class"]})))
    for table in group_tables(results):
        for row in table["rows"]:
            if row.get("accuracy") is None:
                continue
            out.append(EvalResult(
                **here, metric_type="accuracy", metric_name=f"accuracy ({table['by']} = {row['group']})",
                metric_value=row["accuracy"], metric_config=f"{table['by']}={row['group']}",
                metric_args=_args(row.get("ci"), row.get("n"), group_by=table["by"], group=str(row["group"]),
                                  too_small=row.get("too small"), hypothesis=table["hypothesis"])))
    others = {o.get("step"): o for o in _list(
        _dict(results.get("provenance")).get("other_datasets")) if isinstance(o, dict)}
    for row in shift_rows(results):
        revision = _dict(others.get(row["hypothesis"])).get("fingerprint")
        out.append(EvalResult(task_type=TASK, dataset_type=row["loader"], dataset_name=row["data_set"],
                              dataset_revision=revision, metric_type="accuracy", metric_name="accuracy",
                              metric_value=row["accuracy"], metric_args=_args(row["ci"], row["n"],
                                                                              hypothesis=row["hypothesis"])))
    return out


def model_name(results: Mapping[str, Any]) -> str:
    """The model's name in the card: the version the provider states, else what the adapter says it loaded."""
    stated = _dict(results.get("system")).get("model_version")
    if isinstance(stated, str) and stated.strip():
        return stated.strip()
    model = _dict(_dict(results.get("provenance")).get("model"))
    description = _dict(model.get("description"))
    parts = [str(p) for p in (description.get("architecture"), description.get("source")) if p]
    if parts:
        return parts[0] + (f" ({parts[1]})" if len(parts) > 1 else "")
    return str(model.get("adapter") or results.get("title") or "audited model")


def card_context(results: Mapping[str, Any]) -> dict[str, Any]:
    """Plain strings and lists for the card's template (escaped for Markdown; numbers formatted here)."""
    accuracy = _dict(results.get("accuracy"))
    provenance = _dict(results.get("provenance"))
    model = _dict(provenance.get("model"))
    dataset = _dict(provenance.get("dataset"))
    has_limits = "limitations" in results and isinstance(results.get("limitations"), list)
    findings = [f for f in _list(results.get("findings")) if isinstance(f, dict)]
    return {
        "name": md(model_name(results)),
        "title": md(results.get("title") or "xai-audit report"),
        "tool_version": md(_dict(results.get("tool")).get("version") or "unknown"),
        "finished": md(_dict(results.get("run")).get("finished") or "") or None,
        "system": system_rows(results),
        "accuracy": with_ci(accuracy.get("value"), accuracy.get("ci"), accuracy.get("n")) if accuracy.get("value")
        is not None else None,
        "n_samples": _dict(results.get("samples")).get("n"),
        "per_class": [{"cls": md(r.get("class")), "n": r.get("n"), "recall": percent(r.get("recall")),
                       "precision": percent(r.get("precision"))}
                      for r in _list(results.get("per_class")) if isinstance(r, dict)] if accuracy else [],
        "groups": [{"hypothesis": md(t["hypothesis"]), "by": md(t["by"]), "rows": [
            {"group": md(r["group"]), "n": r.get("n"), "accuracy": with_ci(r.get("accuracy"), r.get("ci")),
             "note": "too small for the test to judge" if r.get("too small") else ""} for r in t["rows"]]}
            for t in group_tables(results)],
        "shifts": [{"data_set": md(r["data_set"]), "accuracy": with_ci(r["accuracy"], r["ci"], r["n"]),
                    "audited": percent(r["audited"])} for r in shift_rows(results)],
        "findings": [{"severity": md(f.get("severity", "")), "kind": md(f.get("kind_label") or f.get("kind") or ""),
                      "title": md(f.get("title", "")),
                      "effect": effect_text(f.get("effect"), f.get("ci"), str(f.get("metric") or "")),
                      "p": "" if f.get("p_value_adjusted") is None else f"{f['p_value_adjusted']:.3g}"}
                     for f in findings],
        "hypotheses": [{"name": md(name), "claim": md(_dict(e).get("claim") or ""),
                        "verdict": md(_dict(e).get("verdict") or _dict(e).get("status") or "")}
                       for name, e in _dict(results.get("hypotheses")).items()],
        "declared_limits": [md(t) for t in _list(_dict(results.get("system")).get("known_limitations"))],
        "limits_recorded": has_limits,
        "limits": [md(_dict(item).get("text") or item) for item in _list(results.get("limitations"))],
        "failures": [md(f"{_dict(f).get('step')}: {_dict(f).get('error')}") for f in _list(results.get("failures"))],
        "model_files": [{"path": md(Path(str(f.get("path", ""))).name), "sha256": md(f.get("sha256", ""))}
                        for f in _list(model.get("files")) if isinstance(f, dict)],
        "model_fingerprint": md(model.get("fingerprint") or ""),
        "data_loader": md(dataset.get("loader") or ""),
        "data_fingerprint": md(dataset.get("fingerprint") or ""),
        "data_manifest": md(dataset.get("files_manifest_sha256") or "") or None,
        "data_files": dataset.get("n_files"),
        "plan_sha256": md(_dict(provenance.get("plan_file")).get("sha256") or "") or None,
    }


def card_data(results: Mapping[str, Any]) -> Any:
    """The card's YAML metadata (``huggingface_hub.ModelCardData``) with the ``model-index``."""
    from huggingface_hub import ModelCardData

    adapter = _dict(_dict(results.get("provenance")).get("model")).get("adapter")
    evals = eval_results(results)
    return ModelCardData(
        model_name=model_name(results),
        pipeline_tag=TASK,
        library_name=LIBRARIES.get(str(adapter)),
        tags=["xai-audit", "model-audit", TASK],
        metrics=sorted({e.metric_type for e in evals}) or None,
        eval_results=evals or None,
    )


def model_card(results: Mapping[str, Any], template_dirs: Sequence[Path] = ()) -> str:
    """README.md's text: the YAML metadata, then the card; read back with ``huggingface_hub.ModelCard``."""
    from huggingface_hub import ModelCard

    loaders = [FileSystemLoader(str(d)) for d in template_dirs] + [FileSystemLoader(str(_builtin_templates()))]
    env = Environment(loader=ChoiceLoader(loaders), undefined=StrictUndefined, autoescape=False,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    data = card_data(results)
    text = env.get_template(CARD_TEMPLATE).render(card_data=data.to_yaml(), **card_context(results))
    try:
        card = ModelCard(text)  # parses the metadata back, model-index included: a malformed card stops here
    except Exception as exc:  # huggingface_hub raises ValueError and its own errors
        raise CardError(f"the model card's metadata does not read back: {type(exc).__name__}: {exc}") from exc
    return str(card)
