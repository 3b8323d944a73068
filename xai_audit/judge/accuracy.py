"""Stage 4c, judging the predictions: accuracy with its interval, the confusion matrix, per-class rates."""

from __future__ import annotations

import numpy as np

from xai_audit.contract.stats import wilson_ci


def accuracy_tables(labels: np.ndarray, preds: np.ndarray, classes: list[str], labelled: bool):
    """``(accuracy, confusion, per_class)``; without labels only the prediction shares are known."""
    n_classes = len(classes)
    share = [float(np.mean(preds == k)) if len(preds) else 0.0 for k in range(n_classes)]
    if not labelled:
        return None, None, [
            {"class": c, "n": None, "recall": None, "precision": None, "predicted_share": share[k]}
            for k, c in enumerate(classes)
        ]
    correct = preds == labels
    ci = wilson_ci(int(correct.sum()), len(correct))
    accuracy = {"value": float(correct.mean()), "ci": list(ci) if ci else None, "n": int(len(correct)), "correct": int(correct.sum())}
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(confusion, (labels, preds), 1)
    per_class = []
    for k, c in enumerate(classes):
        n_true, n_pred = int(confusion[k].sum()), int(confusion[:, k].sum())
        per_class.append(
            {
                "class": c,
                "n": n_true,
                "recall": confusion[k, k] / n_true if n_true else None,
                "precision": confusion[k, k] / n_pred if n_pred else None,
                "predicted_share": share[k],
            }
        )
    return accuracy, confusion.tolist(), per_class
