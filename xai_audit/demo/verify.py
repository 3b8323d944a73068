"""``xai-audit demo --verify``: fine-tune the demo model on the recommended data, audit again, compare.

The recommendations are read from the first audit's manifest rows, as a user
would read ``finetune_manifest.csv``:

* ``augment`` rows from a shortcut or a fragility finding are applied on the
  fly to their ``fraction`` of the training images of every class, labels
  unchanged (luminance and grayscale; other augmentations are listed as not
  used);
* ``add-group`` rows draw ``count`` fresh training images of that group from
  the generator (never the audited images);
* ``relabel-or-add`` rows name audited (test) images: training on them would
  make the second audit meaningless, so they are listed as not used.

The fine-tuned weights are cached like the demo model's.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from xai_audit.contract.types import LoadContext
from xai_audit.demo.model import DemoCNN
from xai_audit.demo.train import TrainedModel
from xai_audit.registry import Registry
from xai_audit.run.cache import Cache, content_key

#: bump when the fine-tuning recipe changes
FINETUNE_VERSION = 2
EPOCHS = 8
BATCH = 64
LR = 3e-3
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(1, 3, 1, 1)


@dataclass
class FineTuned:
    weights: Path
    cached: bool
    seconds: float
    used: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    n_images: int = 0


def plan_fine_tuning(rows: Sequence[dict[str, Any]], dataset: str) -> tuple[list[dict], list[dict]]:
    """Split manifest rows into those the demo can use and those it cannot (with the reason)."""
    used, skipped = [], []
    for row in rows:
        action = row.get("action")
        if action == "augment":
            spec = json.loads(row["augmentation"])
            if row.get("kind") not in ("shortcut", "fragility"):
                skipped.append({"action": action, "what": spec.get("transform"),
                                "why": f"{spec.get('transform')}: asked only if the model must work on such images"})
            elif spec.get("transform") in ("luminance", "grayscale"):
                used.append({"action": action, "what": _spec_text(spec), "spec": spec, "fraction": float(row["fraction"])})
            else:
                skipped.append({"action": action, "what": spec.get("transform"),
                                "why": f"{spec.get('transform')}: the demo's fine-tuning has no such augmentation"})
        elif action == "add-group":
            column, _, value = str(row.get("group", "")).partition("=")
            count = int(row.get("count") or 0)
            if dataset == "synthetic-faces" and column == "skin_tone" and count > 0:
                used.append({"action": action, "what": f"{count} new images of skin_tone {value}",
                             "group": value, "count": count})
            else:
                skipped.append({"action": action, "what": row.get("group"),
                                "why": f"{row.get('group')}: no images to add" if count == 0
                                else f"{row.get('group')}: the generator cannot draw this group"})
        elif action == "relabel-or-add":
            if not any(s["action"] == action for s in skipped):
                skipped.append({"action": action, "what": "hard examples",
                                "why": "hard examples are audited images: training on them would void the re-audit"})
        else:
            skipped.append({"action": action, "what": row.get("group"), "why": f"{action}: not supported by the demo"})
    return used, skipped


def fine_tune(
    registry: Registry, cache: Cache, trained: TrainedModel, rows: Sequence[dict[str, Any]], *, seed: int,
    log: Callable[[str], None] = print,
) -> FineTuned:
    recipe = trained.recipe
    used, skipped = plan_fine_tuning(rows, recipe.dataset)
    plugin = registry.get("dataset", recipe.dataset).cls
    context = LoadContext(base_dir=Path.cwd(), seed=seed)
    base = plugin(plugin.Options(**recipe.train_options)).load(context)
    key = content_key(
        "demo-finetune", FINETUNE_VERSION, _sha(trained.weights), base.fingerprint(),
        [{k: v for k, v in u.items() if k != "what"} for u in used], EPOCHS, LR, seed,
    )
    path = cache.file_path(f"demo-finetuned-{key[:16]}.pt")
    parts = [_arrays(base)]
    for u in used:
        if u["action"] == "add-group":
            options = {**recipe.train_options, "rare_tone": u["group"], "rare_fraction": 1.0,
                       "dark_sad": 0.0, "dark_other": 0.0, "n": u["count"], "seed": recipe.train_options["seed"] + 1000}
            parts.append(_arrays(plugin(plugin.Options(**options)).load(context)))
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    if path.exists():
        return FineTuned(path, True, 0.0, used, skipped, len(x))

    start = time.perf_counter()
    log(f"fine-tuning the demo CNN on {len(x)} images with the recommended data ({EPOCHS} epochs, CPU)...")
    torch.manual_seed(seed)
    model = DemoCNN(n_classes=recipe.n_classes, in_channels=recipe.in_channels)
    model.load_state_dict(torch.load(trained.weights, map_location="cpu"))
    optimiser = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    steps = EPOCHS * ((len(x) + BATCH - 1) // BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=LR, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    augmentations = [u for u in used if u["action"] == "augment"]
    model.train()
    for _ in range(EPOCHS):
        order = rng.permutation(len(x))
        for s in range(0, len(x), BATCH):
            idx = order[s : s + BATCH]
            batch = augment(x[idx], augmentations, rng)
            optimiser.zero_grad()
            loss = loss_fn(model(torch.as_tensor(batch)), torch.as_tensor(y[idx]))
            loss.backward()
            optimiser.step()
            schedule.step()
    model.eval()
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return FineTuned(path, False, time.perf_counter() - start, used, skipped, len(x))


def augment(images: np.ndarray, augmentations: Sequence[dict[str, Any]], rng: np.random.Generator) -> np.ndarray:
    """Apply each augmentation to its fraction of the batch (labels unchanged)."""
    out = images.copy()
    for a in augmentations:
        chosen = rng.random(len(out)) < a["fraction"]
        if not chosen.any():
            continue
        spec = a["spec"]
        if spec["transform"] == "luminance":
            lo, hi = spec["factor"]
            factors = rng.uniform(lo, hi, size=int(chosen.sum())).astype(np.float32)
            out[chosen] = np.clip(out[chosen] * factors[:, None, None, None], 0, 1)
        elif spec["transform"] == "grayscale":
            luma = (out[chosen] * LUMA).sum(axis=1, keepdims=True)
            out[chosen] = np.repeat(luma, 3, axis=1)
    return out


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Every finding of the first audit, with the same test's result in the second."""
    rows = []
    for finding in before.get("findings") or []:
        b = _locate(before, finding)
        a = _locate(after, finding)
        if b is None:
            continue
        row = {
            "title": finding.get("title"), "kind": finding.get("kind"), "metric": b.get("metric"),
            "source": finding.get("source"),
            "before": _numbers(b), "after": _numbers(a) if a is not None else {"verdict": "not tested"},
        }
        if finding.get("kind") == "shortcut" and a is not None:
            target = finding.get("class")
            now = (a.get("details") or {}).get("class")
            if now != target:
                gain = ((a.get("details") or {}).get("gain_by_class") or {}).get(target)
                row["after"] = {"effect": gain, "ci": None,
                                "verdict": f"not supported (largest gain now '{now}')", "p_value_adjusted": None}
        eb, ea = row["before"].get("effect"), row["after"].get("effect")
        row["shrunk_by"] = 1 - max(ea, 0.0) / eb if eb and eb > 0 and ea is not None else None
        rows.append(row)
    return rows


def verification_summary(
    before: dict[str, Any], after: dict[str, Any], tuned: FineTuned, after_report: str
) -> dict[str, Any]:
    return {
        "method": "The demo model was fine-tuned on the recommended data, then the same audit plan was run again.",
        "fine_tune": {
            # its seconds, and whether the cache had it, are run facts: results.json's run.fine_tune
            "epochs": EPOCHS, "n_images": tuned.n_images, "weights": str(tuned.weights),
            "used": [{k: v for k, v in u.items() if k != "spec"} for u in tuned.used],
            "skipped": tuned.skipped,
        },
        "accuracy": {
            "before": (before.get("accuracy") or {}).get("value"),
            "after": (after.get("accuracy") or {}).get("value"),
        },
        "comparisons": compare(before, after),
        "after_findings": [f"{f.get('kind_label', f.get('kind'))}: {f.get('title')}" for f in after.get("findings") or []],
        "after_report": after_report,
    }


def _locate(results: dict[str, Any], finding: dict[str, Any]) -> dict[str, Any] | None:
    entry = (results.get("hypotheses") or {}).get(finding.get("hypothesis", ""))
    if not entry or entry.get("status") != "ok":
        return None
    test = finding.get("test", "primary")
    if test == "primary":
        return entry
    return next((t for t in entry.get("tests") or [] if t.get("name") == test), None)


def _numbers(test: dict[str, Any]) -> dict[str, Any]:
    return {k: test.get(k) for k in ("effect", "ci", "p_value_adjusted", "verdict", "before", "after")}


def _arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(dataset, "arrays"):
        images, labels, _ = dataset.arrays()
        return images.astype(np.float32), labels.astype(np.int64)
    samples = [dataset[i] for i in range(len(dataset))]
    return np.stack([s.image for s in samples]).astype(np.float32), np.array([s.label for s in samples], np.int64)


def _spec_text(spec: dict[str, Any]) -> str:
    extra = ", ".join(f"{k} {v}" for k, v in spec.items() if k != "transform")
    return f"{spec['transform']} ({extra})" if extra else spec["transform"]


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
