"""Recommended fine-tuning data: each finding turned into data that would fix it.

:func:`recommend` is a function of the audit's results, its samples and the
hypothesis plugins that ran; it returns manifest rows, most important first. Each
finding's rows come from its hypothesis's ``recommend`` hook (xai_audit.api):
this module knows no hypothesis by name. The actions:

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
from pathlib import Path
from typing import Any, Mapping, Sequence

from xai_audit.contract.recommendations import COLUMNS, recommendation
from xai_audit.contract.types import HypothesisPlugin, Sample
from xai_audit.files import atomic_write

MANIFEST_NAME = "finetune_manifest.csv"
#: hard examples listed at most, and the confidence that makes a wrong prediction "confident"
MAX_HARD_EXAMPLES = 20
HARD_CONFIDENCE = 0.8


def recommend(results: dict[str, Any], samples: Sequence[Sample], plugins: Mapping[str, HypothesisPlugin],
              failures: list[dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """Manifest rows: each finding's (in finding order), then rows without a finding, then hard examples.

    ``plugins`` maps a hypothesis step's name to its plugin. A row equal to an earlier one in what it
    asks for (action, group, augmentation, sample) is left out. A hook that raises is listed in ``failures``.
    """
    hypotheses = results.get("hypotheses") or {}
    rows: list[dict[str, Any]] = []
    calls = [(f.get("hypothesis", ""), f) for f in results.get("findings") or []]
    calls += [(name, None) for name, entry in hypotheses.items() if entry.get("status") == "ok"]
    for name, finding in calls:
        plugin, entry = plugins.get(name), hypotheses.get(name)
        if plugin is None or entry is None:
            continue
        try:
            new = [dict(row) for row in plugin.recommend(finding, entry) or []]
        except Exception as exc:  # one plugin's hook must not cost the others' rows
            if failures is not None:
                failures.append({"step": f"recommendations of hypothesis {name}", "plugin": plugin.name,
                                 "error": f"{type(exc).__name__}: {exc}", "traceback": ""})
            continue
        for row in new:
            row["finding"] = row.get("finding") or f"hypotheses.{name}"
        rows += new
    rows = _unique(rows)
    rows += _hard_examples(results, samples)
    for priority, row in enumerate(rows, start=1):
        row["priority"] = priority
    return rows


def _unique(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[str, str, str, str]] = set()
    out = []
    for row in rows:  # rows about different samples (relabel-or-add) are different rows
        key = (str(row.get("action")), str(row.get("group", "")), str(row.get("augmentation", "")),
               str(row.get("sample_id", "")))
        if key in seen:
            continue
        seen.add(key)
        out.append(row)
    return out


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
        rows.append(recommendation(
            "relabel-or-add", kind="hard example", sample_id=sid, group=group, count=1,
            reason=(
                f"Hard example: predicted '{_name(classes, pred)}' with {100 * conf:.0f} % confidence, labelled "
                f"'{_name(classes, label)}'. Check the label; if it is right, add similar images."
            ),
            finding="per_sample",
        ))
    return rows


# --------------------------------------------------------------------------- the manifest


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
