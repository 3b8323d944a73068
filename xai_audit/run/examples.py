"""Which samples the explainers explain, chosen the way a careful analyst would.

Every audited sample falls in one case by its two highest probabilities:

* **borderline**: the top two are within ``BORDERLINE_MARGIN`` of each other;
* **confident**: the top probability is above ``CONFIDENT_ABOVE``;
* anything else is **other**;

and, when the data are labelled, each case is split into **correct** and
**wrong**. The explanation budget (``explain: {samples: N}``) is shared out
round-robin over the cases, wrong before correct; within a case, round-robin
over the predicted classes, the most typical of the case first (smallest
margin for borderline, highest probability for confident). A budget a case
cannot use goes to the others, and last to "other" samples.

The confusion matrix is in ``results.json``; here also the flow of errors of
the worst-recalled class: which classes it is mistaken for, and the class
that *collects* the errors (the one most wrong predictions go to; a FER2013
study found one class drawing the errors of all the others). With
``explain: {error_sink: N}`` up to N of the images wrongly predicted as that
class are explained too (case ``error-sink``, beyond the budget), the most
confident first, round-robin over their true classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from xai_audit.contract.types import Sample

BORDERLINE_MARGIN = 0.10
CONFIDENT_ABOVE = 0.80

#: which probabilities the cases read: the model's own softmax, before any calibration (the explainers run
#: before the calibration hypothesis, whose temperature is a recommendation, never applied to the audit)
PROBABILITIES = "on the model's raw probabilities (its softmax, not calibrated)"

#: cases in the order they draw from the budget
CASES = ("borderline-wrong", "confident-wrong", "borderline-correct", "confident-correct")
UNLABELLED_CASES = ("borderline", "confident")
CASE_TITLES = {
    "borderline-wrong": "Borderline and wrong",
    "confident-wrong": "Confident and wrong",
    "borderline-correct": "Borderline and correct",
    "confident-correct": "Confident and correct",
    "borderline": "Borderline",
    "confident": "Confident",
    "other": "Other",
    "error-sink": "Wrongly predicted as the class that collects the errors",
}


@dataclass
class Selection:
    indices: np.ndarray
    #: sample index -> its case
    case_of: dict[int, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def case_names(probs: np.ndarray, labels: np.ndarray | None) -> list[str]:
    """The case of every sample."""
    top = np.sort(probs, axis=1)[:, ::-1]
    p1 = top[:, 0]
    p2 = top[:, 1] if probs.shape[1] > 1 else np.zeros(len(probs))
    preds = probs.argmax(axis=1)
    names = []
    for i in range(len(probs)):
        if p1[i] - p2[i] < BORDERLINE_MARGIN:
            kind = "borderline"
        elif p1[i] > CONFIDENT_ABOVE:
            kind = "confident"
        else:
            names.append("other")
            continue
        if labels is None:
            names.append(kind)
        else:
            names.append(f"{kind}-{'correct' if preds[i] == labels[i] else 'wrong'}")
    return names


def choose_examples(
    samples: Sequence[Sample], probs: np.ndarray, labels: np.ndarray | None, budget: int, classes: Sequence[str],
    error_sink: int = 0,
) -> Selection:
    """Up to ``budget`` samples spread over the cases, and up to ``error_sink`` more wrongly predicted as the
    class that collects the errors (see the module docstring)."""
    probs = np.asarray(probs, dtype=np.float64)
    n = len(samples)
    budget = min(budget, n)
    names = case_names(probs, labels)
    preds = probs.argmax(axis=1)
    top = np.sort(probs, axis=1)[:, ::-1]
    margin = top[:, 0] - (top[:, 1] if probs.shape[1] > 1 else 0.0)
    order_cases = list(CASES if labels is not None else UNLABELLED_CASES) + ["other"]
    queues = {case: _spread_over_classes([i for i in range(n) if names[i] == case], preds, margin, case)
              for case in order_cases}
    chosen: list[int] = []
    main = order_cases[:-1]
    while len(chosen) < budget and any(queues[c] for c in main):
        for case in main:
            if queues[case] and len(chosen) < budget:
                chosen.append(queues[case].pop(0))
    while len(chosen) < budget and queues["other"]:
        chosen.append(queues["other"].pop(0))
    sink = error_sink_of(preds, labels, classes) if labels is not None else None
    collected: list[int] = []
    if sink is not None and error_sink > 0:
        collected = _collected(preds, labels, probs, classes.index(sink["class"]), error_sink)
    case_of = {int(i): names[i] for i in chosen}
    case_of.update({int(i): "error-sink" for i in collected if i not in case_of})
    indices = np.array(sorted(case_of), dtype=np.int64)
    summary = {
        "rule": (
            f"borderline: the top two probabilities within {BORDERLINE_MARGIN:g}; confident: top probability above "
            f"{CONFIDENT_ABOVE:g}" + ("; each split into correct and wrong" if labels is not None else "")
            + f"; {PROBABILITIES}"
        ),
        "probabilities": "raw",
        "borderline_margin": BORDERLINE_MARGIN,
        "confident_above": CONFIDENT_ABOVE,
        "budget": int(budget),
        "cases": {
            case: {
                "title": CASE_TITLES[case],
                "n_audited": int(sum(1 for c in names if c == case)),
                "shown": [samples[i].id for i in indices if names[i] == case],
            }
            for case in order_cases
        },
        "confusion_flow": confusion_flow(preds, labels, classes) if labels is not None else None,
        "error_sink": sink,
    }
    if collected:
        summary["cases"]["error-sink"] = {
            "title": f"{CASE_TITLES['error-sink']} ({sink['class']})",  # type: ignore[index]
            "n_audited": int(sink["collected"]),  # type: ignore[index]
            "shown": [samples[i].id for i in sorted(collected)],
        }
    return Selection(indices=indices, case_of=case_of, summary=summary)


def describe_chosen(samples: Sequence[Sample], indices: np.ndarray, probs: np.ndarray,
                    labels: np.ndarray | None, classes: Sequence[str]) -> Selection:
    """The cases of samples chosen elsewhere (a several-model plan explains the same images)."""
    names = case_names(np.asarray(probs, dtype=np.float64), labels)
    order_cases = list(CASES if labels is not None else UNLABELLED_CASES) + ["other"]
    preds = np.asarray(probs).argmax(axis=1)
    summary = {
        "rule": f"the samples another model of the plan was explained on; {PROBABILITIES}",
        "probabilities": "raw",
        "borderline_margin": BORDERLINE_MARGIN,
        "confident_above": CONFIDENT_ABOVE,
        "budget": int(len(indices)),
        "cases": {
            case: {"title": CASE_TITLES[case], "n_audited": int(sum(1 for c in names if c == case)),
                   "shown": [samples[i].id for i in indices if names[i] == case]}
            for case in order_cases
        },
        "confusion_flow": confusion_flow(preds, labels, classes) if labels is not None else None,
        "error_sink": error_sink_of(preds, labels, classes) if labels is not None else None,
    }
    return Selection(indices=np.asarray(indices, dtype=np.int64), case_of={int(i): names[i] for i in indices},
                     summary=summary)


def confusion_flow(preds: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any] | None:
    """For the class with the lowest recall: how many of its samples go to each other class."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    recalls = []
    for k in range(len(classes)):
        n_k = int((labels == k).sum())
        if n_k:
            recalls.append((float((preds[labels == k] == k).mean()), k, n_k))
    if not recalls:
        return None
    recall, worst, n_k = min(recalls)
    wrong = preds[(labels == worst) & (preds != worst)]
    errors = int(len(wrong))
    flows = [
        {"class": classes[j], "n": int((wrong == j).sum()), "share": float((wrong == j).mean()) if errors else 0.0}
        for j in range(len(classes)) if j != worst and (wrong == j).any()
    ]
    flows.sort(key=lambda row: -row["n"])
    return {"class": classes[worst], "recall": recall, "n": n_k, "errors": errors, "to": flows}


def error_sink_of(preds: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any] | None:
    """The class most wrong predictions go to: ``{class, collected, errors, share, precision, from: [{class, n,
    share}]}`` (``collected``: wrong predictions of it; ``share``: of all errors), or None without errors."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    wrong = preds != labels
    errors = int(wrong.sum())
    if not errors:
        return None
    into = np.bincount(preds[wrong], minlength=len(classes))
    sink = int(np.argmax(into))  # ties: the first class
    sources = labels[wrong & (preds == sink)]
    rows = [{"class": classes[j], "n": int((sources == j).sum()), "share": float((sources == j).mean())}
            for j in range(len(classes)) if (sources == j).any()]
    rows.sort(key=lambda row: -row["n"])
    predicted = int((preds == sink).sum())
    return {"class": classes[sink], "collected": int(into[sink]), "errors": errors,
            "share": float(into[sink] / errors), "precision": float((labels[preds == sink] == sink).mean()) if predicted
            else None, "from": rows}


def _collected(preds: np.ndarray, labels: np.ndarray, probs: np.ndarray, sink: int, n: int) -> list[int]:
    """Up to ``n`` images wrongly predicted as ``sink``: round-robin over their true classes, the most confident
    first within each."""
    by_class: dict[int, list[int]] = {}
    wrong = [i for i in range(len(preds)) if preds[i] == sink and labels[i] != sink]
    for i in sorted(wrong, key=lambda i: (-probs[i, sink], i)):
        by_class.setdefault(int(labels[i]), []).append(i)
    out: list[int] = []
    while len(out) < n and any(by_class.values()):
        for k in sorted(by_class):
            if by_class[k] and len(out) < n:
                out.append(by_class[k].pop(0))
    return out


def _spread_over_classes(indices: list[int], preds: np.ndarray, margin: np.ndarray, case: str) -> list[int]:
    """Round-robin over predicted classes; within a class the most typical of the case first."""
    by_class: dict[int, list[int]] = {}
    borderline = case.startswith("borderline")
    key = (lambda i: (margin[i], i)) if borderline else (lambda i: (-margin[i], i))
    for i in sorted(indices, key=key):
        by_class.setdefault(int(preds[i]), []).append(i)
    out: list[int] = []
    while any(by_class.values()):
        for k in sorted(by_class):
            if by_class[k]:
                out.append(by_class[k].pop(0))
    return out
