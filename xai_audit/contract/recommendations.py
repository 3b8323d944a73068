"""Recommended fine-tuning data, as the hypotheses state it: manifest rows and their wording.

A hypothesis says what data would address its finding through
:meth:`~xai_audit.contract.types.HypothesisPlugin.recommend` (by default: the
training augmentation from :meth:`~xai_audit.contract.types.HypothesisPlugin.augmentation`);
the judging stage collects the rows in finding order and writes the manifest.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

#: the manifest's columns, in order
COLUMNS = ("priority", "action", "kind", "sample_id", "group", "augmentation", "fraction", "count", "reason", "finding")
#: what a row may ask for
ACTIONS = ("augment", "add-group", "add-data", "relabel-or-add")
#: share of each class's training images an augmentation row asks for
AUGMENT_FRACTION = 0.3
#: the width of the 95 % interval a recommended sample size aims for
DEFAULT_TARGET_WIDTH = 0.06


def recommendation(action: str, *, kind: str, reason: str, finding: str = "", augmentation: Mapping[str, Any] | None = None,
                   fraction: float | str = "", count: int | str = "", group: str = "",
                   sample_id: str = "") -> dict[str, Any]:
    """One manifest row. ``action``: augment (apply ``augmentation`` to a ``fraction`` of the training images,
    labels unchanged), add-group (``count`` more labelled images of ``group``), add-data (``count`` images like
    another data set ``group``), relabel-or-add (check ``sample_id``'s label). ``finding`` names its source
    (e.g. ``hypotheses.luminance``); ``reason`` says why in words a reviewer reads."""
    if action not in ACTIONS:
        raise ValueError(f"unknown recommendation action {action!r}; known: {', '.join(ACTIONS)}")
    row: dict[str, Any] = {c: "" for c in COLUMNS}
    row.update(action=action, kind=kind, reason=reason, finding=finding, fraction=fraction, count=count, group=group,
               sample_id=sample_id)
    if augmentation is not None:
        row["augmentation"] = json.dumps(dict(augmentation), sort_keys=True)
    return row


def augment_row(finding: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """The augment row for a shortcut, fragility or reliance finding whose intervention ``spec`` undoes."""
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
    return recommendation("augment", kind=str(kind), augmentation=spec, fraction=AUGMENT_FRACTION, reason=why,
                          finding=str(finding.get("source", "")))
