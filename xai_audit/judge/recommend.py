"""Recommended fine-tuning data: each finding turned into data that would fix it.

:func:`recommend` is a pure function of the audit's results and its samples;
it returns manifest rows, most important first:

``augment``         apply an augmentation (darkening, grayscale, occlusion, a
                    face mask, ...) to a share of the training images of every
                    class, labels unchanged: the cure for a shortcut or a
                    fragility found by that intervention.
``add-group``       add labelled images of a group the model fails (or of a
                    group too small to judge): ``count`` is how many more the
                    audit needs to pin that group's accuracy to the target
                    interval width, the least worth collecting.
``add-data``        add labelled images like another data set's.
``relabel-or-add``  a hard example: wrong and confident. Check its label; if it
                    is right, add similar images.

:func:`write_manifest` writes the rows as ``finetune_manifest.csv``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from xai_audit.contract.stats import samples_for_ci_width
from xai_audit.contract.types import Sample
from xai_audit.files import atomic_write

MANIFEST_NAME = "finetune_manifest.csv"
COLUMNS = ("priority", "action", "kind", "sample_id", "group", "augmentation", "fraction", "count", "reason", "finding")
#: share of each class's training images an augmentation row asks for
AUGMENT_FRACTION = 0.3
#: hard examples listed at most, and the confidence that makes a wrong prediction "confident"
MAX_HARD_EXAMPLES = 20
HARD_CONFIDENCE = 0.8
DEFAULT_TARGET_WIDTH = 0.06


def recommend(results: dict[str, Any], samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """Manifest rows for the findings of ``results``, then hard examples from the samples."""
    rows: list[dict[str, Any]] = []
    hypotheses = results.get("hypotheses") or {}
    seen_augmentations: set[str] = set()
    for finding in results.get("findings") or []:
        entry = hypotheses.get(finding.get("hypothesis", ""), {})
        kind = finding.get("kind")
        if kind in ("shortcut", "fragility") or (kind == "reliance" and entry.get("plugin") == "mask-lower-face"):
            row = _augment_row(finding, entry)
            if row is not None and row["augmentation"] not in seen_augmentations:
                seen_augmentations.add(row["augmentation"])
                rows.append(row)
        elif kind == "bias":
            rows += _group_rows(finding, entry)
        elif kind == "shift":
            rows.append(_shift_row(finding, entry))
    rows += _too_small_rows(hypotheses, {(r["group"]) for r in rows if r["action"] == "add-group"})
    rows += _hard_examples(results, samples)
    for priority, row in enumerate(rows, start=1):
        row["priority"] = priority
    return rows


# --------------------------------------------------------------------------- augmentations


def augmentation_spec(plugin: str, options: dict[str, Any], subject: str = "") -> dict[str, Any] | None:
    """A machine-readable augmentation for the intervention ``plugin`` ran with ``options``."""
    if plugin == "luminance":
        factor = float(options.get("factor", 0.2))
        return {"transform": "luminance", "factor": sorted([factor, 1.0])}
    if plugin == "grayscale":
        return {"transform": "grayscale"}
    if plugin == "background":
        return {"transform": "background", "mode": options.get("mode", "recolour"), "color": "random"}
    if plugin == "occlude-regions":
        region = subject or options.get("region") or ""
        return {"transform": "occlude", "region": region, "fill": options.get("fill", "mean")}
    if plugin == "mask-lower-face":
        return {"transform": "mask-lower-face"}
    if plugin == "transform":
        return {"transform": options.get("callable"), "kwargs": options.get("kwargs") or {}}
    return None


def _subject(finding: dict[str, Any], entry: dict[str, Any]) -> str:
    """The region a finding of occlude-regions is about."""
    test = finding.get("test", "primary")
    if test in ("primary", "shortcut"):
        return str((entry.get("details") or {}).get("primary_region", ""))
    return test.split(": ", 1)[-1].replace("occlude ", "")


def _augment_row(finding: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any] | None:
    spec = augmentation_spec(str(entry.get("plugin")), entry.get("options") or {}, _subject(finding, entry))
    if spec is None:
        return None
    kind = finding.get("kind")
    if kind == "shortcut":
        why = (
            f"Shortcut: {finding.get('title')} Train on such images of every class with their own labels, so the "
            f"change stops predicting '{finding.get('class')}'."
        )
    elif kind == "reliance":
        why = (
            f"Reliance: {finding.get('title')} If the model must work on such images, add them with their labels "
            "(where the label is still visible)."
        )
    else:
        why = f"Fragility: {finding.get('title')} Train on such images of every class with their own labels."
    return _row("augment", kind=kind, augmentation=json.dumps(spec, sort_keys=True), fraction=AUGMENT_FRACTION, reason=why,
                finding=finding.get("source", ""))


# --------------------------------------------------------------------------- groups and data


def _group_rows(finding: dict[str, Any], entry: dict[str, Any]) -> list[dict[str, Any]]:
    group = finding.get("group") or {}
    column = group.get("column")
    rows_by_group = {str(r.get("group")): r for r in (entry.get("breakdown") or {}).get(column, [])
                     if isinstance(r, dict)}
    if not rows_by_group:
        return []
    target = float((entry.get("details") or {}).get("target_ci_width", DEFAULT_TARGET_WIDTH))
    best = rows_by_group.get(str(group.get("best")), {})
    best_acc = best.get("accuracy")
    out = []
    for value, row in sorted(rows_by_group.items(), key=lambda kv: kv[1].get("accuracy", 1.0)):
        ci = row.get("ci")
        if value != str(group.get("worst")):
            continue
        needed = samples_for_ci_width(row.get("accuracy", 0.5), target)
        count = max(needed - int(row.get("n", 0)), 0)
        out.append(_row(
            "add-group", kind="bias", group=f"{column}={value}", count=count,
            reason=(
                f"Bias: accuracy for {column} {value} is {_pct(row.get('accuracy'))} {_ci(ci)} against "
                f"{_pct(best_acc)} for {group.get('best')}. Add labelled images of this group to the fine-tuning "
                f"data, at least {count} more: with {needed} in all, a re-audit pins its accuracy to a 95 % "
                f"interval {100 * target:.0f} pp wide."
                if count else
                f"{_pct(best_acc)} for {group.get('best')}. Add labelled images of this group to the fine-tuning "
                f"data; the audit already has enough ({row.get('n')}) to pin its accuracy to a 95 % interval "
                f"{100 * target:.0f} pp wide."
            ),
            finding=finding.get("source", ""),
        ))
    return out


def _too_small_rows(hypotheses: dict[str, Any], already: set[str]) -> list[dict[str, Any]]:
    out = []
    for name, entry in hypotheses.items():
        if entry.get("status") != "ok" or entry.get("plugin") != "group-accuracy":
            continue
        details = entry.get("details") or {}
        target = float(details.get("target_ci_width", DEFAULT_TARGET_WIDTH))
        for column, rows in (entry.get("breakdown") or {}).items():
            for row in rows if isinstance(rows, list) else []:
                if not isinstance(row, dict) or not row.get("too small"):
                    continue
                key = f"{column}={row.get('group')}"
                if key in already:
                    continue
                needed = samples_for_ci_width(row.get("accuracy", 0.5) if row.get("accuracy") is not None else 0.5, target)
                count = max(needed - int(row.get("n", 0)), 0)
                out.append(_row(
                    "add-group", kind="too small", group=key, count=count,
                    reason=(
                        f"Too small to judge: {column} {row.get('group')} has {row.get('n')} audited images "
                        f"(fewer than {details.get('min_group_size')}). {count} more labelled images (to {needed}) "
                        f"give its accuracy a 95 % interval {100 * target:.0f} pp wide."
                    ),
                    finding=f"hypotheses.{name}",
                ))
    return out


def _shift_row(finding: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    details = entry.get("details") or {}
    after = entry.get("after")
    needed = samples_for_ci_width(after if after is not None else 0.5, DEFAULT_TARGET_WIDTH)
    return _row(
        "add-data", kind="shift", group=str(details.get("other_data_set", "")), count=needed,
        reason=f"Data shift: {finding.get('title')} Add labelled images like these to the fine-tuning data.",
        finding=finding.get("source", ""),
    )


# --------------------------------------------------------------------------- hard examples


def _hard_examples(results: dict[str, Any], samples: Sequence[Sample]) -> list[dict[str, Any]]:
    per = results.get("per_sample") or {}
    ids, preds, confidence = per.get("ids"), per.get("predictions"), per.get("confidence")
    classes = results.get("classes") or []
    if not ids or preds is None or confidence is None:
        return []
    by_id = {s.id: s for s in samples}
    wrong = []
    for sid, pred, conf in zip(ids, preds, confidence):
        sample = by_id.get(sid)
        if sample is None or sample.label is None or int(pred) == int(sample.label) or conf < HARD_CONFIDENCE:
            continue
        wrong.append((conf, sid, int(pred), int(sample.label), sample.groups))
    wrong.sort(key=lambda w: (-w[0], w[1]))
    rows = []
    for conf, sid, pred, label, groups in wrong[:MAX_HARD_EXAMPLES]:
        group = ", ".join(f"{k}={v}" for k, v in groups.items())
        rows.append(_row(
            "relabel-or-add", kind="hard example", sample_id=sid, group=group, count=1,
            reason=(
                f"Hard example: predicted '{_name(classes, pred)}' with {100 * conf:.0f} % confidence, labelled "
                f"'{_name(classes, label)}'. Check the label; if it is right, add similar images."
            ),
            finding="per_sample",
        ))
    return rows


# --------------------------------------------------------------------------- the manifest


def _row(action: str, **fields: Any) -> dict[str, Any]:
    row = {c: "" for c in COLUMNS}
    row.update({"action": action, **fields})
    return row


def manifest_csv(rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in COLUMNS})
    return out.getvalue()


def write_manifest(rows: Sequence[dict[str, Any]], out_dir: Path) -> Path:
    """Write ``finetune_manifest.csv`` into ``out_dir`` atomically; returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MANIFEST_NAME
    atomic_write(path, manifest_csv(rows).encode("utf-8"))
    return path


def _name(classes: Sequence[str], index: int) -> str:
    return classes[index] if 0 <= index < len(classes) else str(index)


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * float(x):.1f} %"


def _ci(ci: Any) -> str:
    if not ci or ci[0] is None:
        return ""
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
