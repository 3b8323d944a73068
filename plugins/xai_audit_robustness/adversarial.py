"""adversarial: the smallest L-infinity perturbation that changes each image's prediction.

    hypotheses:
      - adversarial: {max_images: 64, budgets: ["1/255", "2/255", "4/255", "8/255"], reference_budget: "2/255"}

For each audited image (a seeded subset of at most ``max_images``) an untargeted PGD attack (``steps`` signed
gradient steps on the margin between the clean prediction's logit and the best other one, no random start, so
it is deterministic; an image stops as soon as it flips) runs at each of the plan's ``budgets`` (the share of
images flipped there, with Wilson intervals) and at ``max_budget``. That brackets each image's smallest
flipping budget; a bisection narrows each bracket to ``max_budget / 2 ** bisection``. An image that does not
flip at ``max_budget`` is counted at ``max_budget`` (censored: its true budget is larger; the number is
reported).

captum's ``captum.robust.PGD`` takes one radius for a whole batch, so a per-image bisection would run one image
per batch; the few lines of PGD here take one budget per image and batch every image at once. Gradients come
from ``context.model.forward`` (the torch module under the audit's input mapping); a black box is refused.

The hypothesis's own test: does more than ``tolerated_flip_share`` of the images flip at ``reference_budget``
(one-sided exact binomial test, Wilson interval)? Per group column: do the groups need different budgets (a
permutation test of the gap between the most and the least robust group's mean budget, with a bootstrap
interval; a ``bias`` finding when significant). Both enter the audit's Holm correction.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from pydantic import Field, field_validator
from scipy import stats

from xai_audit.api import (
    ALPHA,
    DataError,
    HypothesisContext,
    HypothesisPlugin,
    HypothesisResult,
    ModelError,
    Options,
    bootstrap_gap_ci,
    permutation_gap_test,
    wilson_ci,
)
from xai_audit_robustness._common import group_columns, seeded_subset, wilson

#: images per attacked batch
BATCH = 64


def _budget(value: Any) -> float:
    """A budget as a number in pixel units of [0, 1], or a string "k/255"."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*", value)
        if not m or float(m.group(2)) == 0:
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"a budget is a number or 'k/255', not {value!r}") from None
        else:
            value = float(m.group(1)) / float(m.group(2))
    value = float(value)
    if not 0 < value <= 1:
        raise ValueError(f"a budget is in (0, 1] (pixel range [0, 1]), not {value}")
    return value


class AdversarialOptions(Options):
    max_images: int = Field(64, ge=1, description="attack at most this many audited images (a seeded subset)")
    budgets: list[float | str] = Field(
        default_factory=lambda: ["1/255", "2/255", "4/255", "8/255"], validate_default=True,
        description="L-infinity budgets (pixel range [0, 1]; 'k/255' allowed) at which the share flipped is reported",
    )
    reference_budget: float | str = Field("2/255", validate_default=True,
                                              description="the budget of the hypothesis's own test")
    tolerated_flip_share: float = Field(
        0.1, ge=0, lt=1, description="the test asks whether more than this share of images flips at reference_budget"
    )
    max_budget: float | str = Field("16/255", validate_default=True,
                                       description="the largest budget the bisection searches")
    steps: int = Field(10, ge=1, le=200, description="PGD steps per attack")
    bisection: int = Field(7, ge=1, le=20, description="halvings of the budget interval per image")
    l2: bool = Field(True, description="also search the smallest L2 perturbation (PGD under an L2 ball)")
    l2_budgets: list[float] = Field(
        default_factory=lambda: [0.25, 0.5, 1.0, 2.0],
        description="L2 budgets (the perturbation's Euclidean norm over every pixel and channel in [0, 1]) at which "
        "the share flipped is reported",
    )
    l2_max_budget: float = Field(4.0, gt=0, description="the largest L2 budget the bisection searches")
    min_group_size: int = Field(10, ge=2, description="groups smaller than this are shown but not judged")
    min_gap: float = Field(0.0, ge=0, le=1, description="smallest gap in mean L∞ budget (pixel range [0, 1]) worth "
                           "reporting")

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, value: list[Any]) -> list[float]:
        if not value:
            raise ValueError("name at least one budget")
        return sorted({_budget(v) for v in value})

    @field_validator("l2_budgets")
    @classmethod
    def _l2_budgets(cls, value: list[float]) -> list[float]:
        if not value or any(float(v) <= 0 for v in value):
            raise ValueError("L2 budgets are positive numbers; name at least one")
        return sorted({float(v) for v in value})

    @field_validator("reference_budget", "max_budget")
    @classmethod
    def _one(cls, value: Any) -> float:
        return _budget(value)


def _per255(x: float) -> str:
    return f"{255 * x:.3g}/255"


class AdversarialHypothesis(HypothesisPlugin):
    name = "adversarial"
    description = (
        "Smallest L-infinity perturbation that flips each image (PGD + bisection), per class and group; share "
        "flipped at the plan's budgets; a test of whether some group flips at smaller budgets."
    )
    Options = AdversarialOptions

    def augmentation(self, finding, result):
        """Adversarial training: PGD examples at the reference budget."""
        o: AdversarialOptions = self.options
        return {"transform": "adversarial", "method": "pgd", "norm": "linf", "epsilon": float(o.reference_budget),
                "steps": o.steps}

    def test(self, context: HypothesisContext) -> HypothesisResult:
        o: AdversarialOptions = self.options
        model = context.model
        if getattr(model, "module", None) is None:
            raise ModelError(
                "adversarial needs gradients through the model, and this model is a black box (its adapter has no "
                "torch module, e.g. ONNX): use the corruptions hypothesis for a black box"
            )
        budgets = sorted(set(o.budgets) | {float(o.reference_budget)})
        max_budget = max(float(o.max_budget), budgets[-1])
        index = seeded_subset(len(context.samples), o.max_images, context.seed)
        if not len(index):
            raise DataError("adversarial: no samples to attack")
        samples = [context.samples[int(i)] for i in index]
        images = np.stack([s.image for s in samples]).astype(np.float32)
        target = context.probs[index].argmax(axis=1)
        eps, censored, at = _smallest(_Attack(model, o.steps, "linf"), images, target, budgets, max_budget,
                                      o.bisection)
        l2 = None
        if o.l2:
            l2_budgets = list(o.l2_budgets)
            l2_max = max(float(o.l2_max_budget), l2_budgets[-1])
            l2 = (*_smallest(_Attack(model, o.steps, "l2"), images, target, l2_budgets, l2_max, o.bisection),
                  l2_budgets, l2_max)
        return _result(context, o, samples, index, target, eps, censored, at, budgets, max_budget, l2)


def _smallest(attack: "_Attack", images: np.ndarray, target: np.ndarray, budgets: list[float], max_budget: float,
              bisection: int) -> tuple[np.ndarray, np.ndarray, dict[float, np.ndarray]]:
    """Each image's smallest flipping budget (max_budget where none flips it: censored) and who flips at each
    budget. PGD at every budget and at max_budget brackets each image's smallest flipping budget; a bisection
    then narrows each bracket to the resolution max_budget / 2 ** bisection (only the images still open)."""
    n = len(images)
    ladder = sorted(set(budgets) | {max_budget})
    # every rung of the ladder at once: each image once per budget in the same batches (one budget per copy),
    # so the passes run in full batches rather than one small batch per budget
    flat = attack.flips(np.tile(images, (len(ladder), 1, 1, 1)), np.tile(target, len(ladder)),
                        np.repeat(np.asarray(ladder, float), n))
    at = {b: flat[k * n:(k + 1) * n] for k, b in enumerate(ladder)}
    flipped = np.any(np.stack([at[b] for b in ladder]), axis=0)
    hi = np.array([min([b for b in ladder if at[b][i]], default=max_budget) for i in range(n)])
    lo = np.array([max([0.0] + [b for b in ladder if b < hi[i] and not at[b][i]]) for i in range(n)])
    resolution = max_budget / 2 ** bisection
    for _ in range(64):
        live = flipped & (hi - lo > resolution * (1 + 1e-9))
        if not live.any():
            break
        mid = (lo + hi) / 2
        f = np.zeros(n, bool)
        f[live] = attack.flips(images[live], target[live], mid[live])
        hi = np.where(live & f, mid, hi)
        lo = np.where(live & ~f, mid, lo)
    eps = np.where(flipped, hi, max_budget)
    return eps, ~flipped, {b: at[b] for b in budgets}


class _Attack:
    """Untargeted PGD on the margin loss (L-infinity: signed steps, a box; L2: normalised steps, a ball), one
    budget per image, batched."""

    def __init__(self, model, steps: int, norm: str = "linf"):
        self.model = model
        self.steps = steps
        self.norm = norm
        #: forward (+ backward) passes run, image by image, for the benchmark's limit
        self.passes = 0

    def flips(self, images: np.ndarray, target: np.ndarray, eps: np.ndarray) -> np.ndarray:
        out = np.zeros(len(images), bool)
        for start in range(0, len(images), BATCH):
            sl = slice(start, start + BATCH)
            out[sl] = self._batch(images[sl], target[sl], eps[sl])
        return out

    def _batch(self, images: np.ndarray, target: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """PGD on one batch; an image leaves the batch as soon as its prediction flips (it keeps its perturbation)."""
        import torch

        device = getattr(self.model, "device", "cpu")
        x0 = torch.as_tensor(images, device=device)
        t = torch.as_tensor(target, device=device, dtype=torch.long)
        e = torch.as_tensor(eps, device=device, dtype=x0.dtype).view(-1, 1, 1, 1)
        step = 2.5 * e / self.steps
        delta = torch.zeros_like(x0)
        flipped = torch.zeros(len(x0), dtype=torch.bool, device=device)
        with torch.enable_grad():
            for _ in range(self.steps):
                live = (~flipped).nonzero()[:, 0]
                if not len(live):
                    break
                x = (x0[live] + delta[live]).clamp(0, 1).detach().requires_grad_(True)
                logits = self.model.forward(x)
                tl = t[live]
                now = logits.detach().argmax(dim=1) != tl
                rows = torch.arange(len(live), device=device)
                other = logits.clone()
                other[rows, tl] = -torch.inf
                margin = logits[rows, tl] - other.max(dim=1).values
                (grad,) = torch.autograd.grad(margin.sum(), x)
                self.passes += len(live)
                if self.norm == "linf":
                    new = (delta[live] - step[live] * grad.sign()).clamp(-e[live], e[live])
                else:
                    g = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                    new = delta[live] - step[live] * g
                    norm = new.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                    new = new * torch.clamp(e[live] / norm, max=1.0)
                new = (x0[live] + new).clamp(0, 1) - x0[live]
                delta[live] = torch.where(now.view(-1, 1, 1, 1), delta[live], new.detach())
                flipped[live] = now
        live = (~flipped).nonzero()[:, 0]
        if len(live):
            self.passes += len(live)
            with torch.no_grad():
                flipped[live] = self.model.forward((x0[live] + delta[live]).clamp(0, 1)).argmax(dim=1) != t[live]
        return flipped.cpu().numpy()


def _result(context, o: AdversarialOptions, samples, index, target, eps, censored, at, budgets, max_budget,
            l2=None) -> HypothesisResult:
    n = len(samples)
    ref = float(o.reference_budget)
    k = int(at[ref].sum())
    share = k / n
    p_value = float(stats.binomtest(k, n, o.tolerated_flip_share, alternative="greater").pvalue)
    ci = wilson_ci(k, n)
    supported = p_value < ALPHA and ci is not None and ci[0] > o.tolerated_flip_share
    labels = context.labels
    labels = labels[index] if labels is not None else None
    classes = list(context.classes)
    rng = np.random.default_rng(context.seed)
    boot = eps[rng.integers(0, n, size=(2000, n))].mean(axis=1)
    per_budget = []
    for b in budgets:
        row = {"budget": b, "budget (/255)": 255 * b, "flipped": int(at[b].sum()), "share flipped": float(at[b].mean()),
               "ci": wilson(int(at[b].sum()), n)}
        if labels is not None:
            robust = (target == labels) & ~at[b]
            row.update({"robust accuracy": float(robust.mean()), "robust accuracy ci": wilson(int(robust.sum()), n)})
        per_budget.append(row)
    key = labels if labels is not None else target
    if l2 is not None:
        eps2, censored2, at2, budgets2, max2 = l2
        for b in budgets2:
            row = {"budget": b, "budget (/255)": None, "norm": "L2", "flipped": int(at2[b].sum()),
                   "share flipped": float(at2[b].mean()), "ci": wilson(int(at2[b].sum()), n)}
            if labels is not None:
                robust = (target == labels) & ~at2[b]
                row.update({"robust accuracy": float(robust.mean()), "robust accuracy ci": wilson(int(robust.sum()), n)})
            per_budget.append(row)
        for row in per_budget:
            row.setdefault("norm", "L∞")

    def summary(head, mask):
        row = _summary(head, eps, mask, at, budgets, context.seed)
        if l2 is not None:
            row.update(_summary_l2(eps2, mask, at2, budgets2, context.seed))
        return row

    per_class = [summary({"class": c}, key == j) for j, c in enumerate(classes) if np.any(key == j)]
    breakdown: dict[str, list[dict[str, Any]]] = {"per budget": per_budget, "per class": per_class}
    tests, warnings = [], []
    columns = group_columns(samples)
    for column, values in columns.items():
        breakdown[f"per group: {column}"] = [
            {**summary({"group": g}, values == g), "too small": int(np.sum(values == g)) < o.min_group_size}
            for g in sorted(set(values.tolist()))
        ]
        test, small = _group_test(column, values, eps, o, context.seed)
        if test is not None:
            tests.append(test)
        if l2 is not None:
            test2, _ = _group_test(column, values, eps2, o, context.seed, norm="L2")
            if test2 is not None:
                tests.append(test2)
        if small:
            warnings.append(f"{column}: {', '.join(f'{g} (n = {m})' for g, m in small)} below {o.min_group_size} "
                            "attacked images: shown, but too small to judge")
    if censored.any():
        warnings.append(f"{int(censored.sum())} of {n} images did not flip at the largest budget searched "
                        f"({_per255(max_budget)}): they are counted at that budget, so means are lower bounds")
    if l2 is not None and censored2.any():
        warnings.append(f"{int(censored2.sum())} of {n} images did not flip at the largest L2 budget searched "
                        f"({max2:g}): they are counted at that budget, so L2 means are lower bounds")
    details = {
        "budgets": budgets, "budgets_255": [255 * b for b in budgets], "reference_budget": ref,
        "tolerated_flip_share": o.tolerated_flip_share, "max_budget": max_budget, "steps": o.steps,
        "bisection": o.bisection, "resolution": max_budget / 2 ** o.bisection,
        "method": "untargeted L-infinity PGD on the logit margin (no random start), at each budget and at max_budget, "
                  "then a bisection of each image's bracket",
        "mean_budget": float(eps.mean()), "mean_budget_ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "median_budget": float(np.median(eps)), "n_censored": int(censored.sum()),
        "share_flipped": {f"{255 * b:g}/255": float(at[b].mean()) for b in budgets},
        "attacked_ids": [s.id for s in samples],
        "norms": ["linf", "l2"] if l2 is not None else ["linf"],
    }
    if l2 is not None:
        boot2 = eps2[rng.integers(0, n, size=(2000, n))].mean(axis=1)
        details["l2"] = {
            "budgets": budgets2, "max_budget": max2, "resolution": max2 / 2 ** o.bisection,
            "share_flipped": {f"{b:g}": float(at2[b].mean()) for b in budgets2},
            "mean_budget": float(eps2.mean()),
            "mean_budget_ci": [float(np.percentile(boot2, 2.5)), float(np.percentile(boot2, 97.5))],
            "median_budget": float(np.median(eps2)), "n_censored": int(censored2.sum()),
            "method": "untargeted L2 PGD on the logit margin (normalised gradient steps, projection on the ball)",
        }
    figures = [{
        "kind": "lines", "title": "Share of images flipped against the L∞ budget",
        "x": [0.0] + [255 * b for b in budgets],
        "series": [{"label": "share flipped", "y": [0.0] + [float(at[b].mean()) for b in budgets]}]
        + ([{"label": "robust accuracy", "y": [float((target == labels).mean())]
             + [float(((target == labels) & ~at[b]).mean()) for b in budgets], "style": "dashed"}]
           if labels is not None else []),
        "xlabel": "L∞ budget (/255)", "ylabel": "share of images",
        "caption": f"Share of the {n} attacked images whose prediction changes under a PGD perturbation of at most "
                   "each budget (Wilson intervals in the table 'per budget').",
        "alt": "Line plot of the share of images flipped against the perturbation budget.",
    }, {
        "kind": "bars", "title": "Smallest flipping budget per class (mean, /255)",
        "labels": [r["class"] for r in per_class],
        "series": [{"label": "mean budget (/255)", "values": [r["mean budget (/255)"] for r in per_class],
                    "low": [r["ci (/255)"][0] for r in per_class], "high": [r["ci (/255)"][1] for r in per_class]}],
        "ylabel": "budget (/255)", "key": True,
        "caption": (f"Mean smallest L∞ budget that flips an image of each class ({n} attacked images), with 95 % "
                    "bootstrap intervals: the lower the bar, the more easily the class is pushed to another."),
        "alt": "Bar chart of the mean smallest flipping budget per class.",
    }]
    if l2 is not None:
        figures.append({
            "kind": "bars", "title": "Smallest flipping L2 budget per class (mean)",
            "labels": [r["class"] for r in per_class],
            "series": [{"label": "mean L2 budget", "values": [r["mean L2 budget"] for r in per_class],
                        "low": [r["L2 ci"][0] for r in per_class], "high": [r["L2 ci"][1] for r in per_class]}],
            "ylabel": "L2 budget",
            "caption": "Mean smallest L2 budget (Euclidean norm of the perturbation, pixels in [0, 1]) that flips an "
                       "image of each class, with 95 % bootstrap intervals.",
            "alt": "Bar chart of the mean smallest flipping L2 budget per class.",
        })
    order = np.argsort(eps, kind="stable")
    return HypothesisResult(
        claim=(f"More than {100 * o.tolerated_flip_share:.0f} % of the images change prediction under an L∞ "
               f"perturbation of at most {_per255(ref)}."),
        metric=f"share of images flipped at L∞ {_per255(ref)}",
        before=0.0, after=share, effect=share, ci=ci, p_value=p_value,
        verdict="supported" if supported else "not supported", n=n,
        test=(f"one-sided exact binomial test of the share flipped against {100 * o.tolerated_flip_share:.0f} %; "
              "95 % Wilson interval"),
        breakdown=breakdown, examples=[samples[int(i)].id for i in order[:8]], details=details, figures=figures,
        kind="fragility", tests=tests, warnings=warnings, key_tables=["per budget"],
    )


def _summary(head: dict[str, Any], eps: np.ndarray, mask: np.ndarray, at: dict, budgets: list[float], seed: int
             ) -> dict[str, Any]:
    values = eps[mask]
    rng = np.random.default_rng(seed)
    boot = values[rng.integers(0, len(values), size=(2000, len(values)))].mean(axis=1)
    row = {**head, "n": int(mask.sum()), "mean budget (/255)": 255 * float(values.mean()),
           "ci (/255)": [255 * float(np.percentile(boot, 2.5)), 255 * float(np.percentile(boot, 97.5))],
           "median budget (/255)": 255 * float(np.median(values))}
    for b in budgets:
        row[f"flipped at {255 * b:g}/255"] = float(at[b][mask].mean())
    return row


def _summary_l2(eps: np.ndarray, mask: np.ndarray, at: dict, budgets: list[float], seed: int) -> dict[str, Any]:
    values = eps[mask]
    rng = np.random.default_rng(seed)
    boot = values[rng.integers(0, len(values), size=(2000, len(values)))].mean(axis=1)
    row = {"mean L2 budget": float(values.mean()),
           "L2 ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
           "median L2 budget": float(np.median(values))}
    for b in budgets:
        row[f"flipped at L2 {b:g}"] = float(at[b][mask].mean())
    return row


def _group_test(column: str, values: np.ndarray, eps: np.ndarray, o: AdversarialOptions, seed: int,
                norm: str = "L∞"):
    """Do the groups need different budgets? The gap between the most and the least robust group's mean budget,
    in /255 for L∞ and in L2 norm for L2 (a permutation test, a bootstrap interval)."""
    groups = sorted(set(values.tolist()))
    sizes = {g: int(np.sum(values == g)) for g in groups}
    small = [(g, sizes[g]) for g in groups if sizes[g] < o.min_group_size]
    judged = [g for g in groups if sizes[g] >= o.min_group_size]
    if len(judged) < 2:
        return None, small
    scale, unit = (255.0, "/255") if norm == "L∞" else (1.0, "")
    x = eps * scale
    mask = np.isin(values, judged)
    means = {g: float(x[values == g].mean()) for g in judged}
    best = max(judged, key=lambda g: means[g])  # most robust: needs the largest budget
    worst = min(judged, key=lambda g: means[g])
    gap, p_value = permutation_gap_test(x[mask], values[mask], seed=seed)
    ci = bootstrap_gap_ci(x, values, best, worst, seed=seed)
    u_p = float(stats.mannwhitneyu(x[values == best], x[values == worst], alternative="two-sided").pvalue)
    min_gap = o.min_gap * scale if norm == "L∞" else 0.0
    supported = p_value < ALPHA and ci[0] > min_gap
    # a budget is no share, so the findings' scale (10 points: high) does not apply: the gap relative to the most
    # robust group's budget, and never "high": it says who is easier to attack, not whom the model fails now
    relative = gap / means[best] if means[best] > 0 else 0.0
    detail = (f"{column} {worst} flips at a mean {norm} budget of {means[worst]:.3g}{unit}, {best} at "
              f"{means[best]:.3g}{unit}: {gap:.3g}{unit} less (95 % CI {ci[0]:.3g} to {ci[1]:.3g}; n = {sizes[worst]} "
              f"and {sizes[best]}).")
    return {
        "name": f"{'L2 ' if norm == 'L2' else ''}budget gap by {column}", "kind": "bias", "explains": "",
        "claim": (f"Images of {column} {worst} flip at smaller {norm} budgets (mean {means[worst]:.3g}{unit}) than "
                  f"those of {best} (mean {means[best]:.3g}{unit})."),
        "metric": (f"difference in mean smallest flipping {norm} budget{' (/255)' if unit else ''}, most robust "
                   "group minus least robust"),
        "before": means[best], "after": means[worst], "effect": float(gap), "ci": [float(ci[0]), float(ci[1])],
        "p_value": p_value, "verdict": "supported" if supported else "not supported", "n": int(mask.sum()),
        "test": ("permutation test of the difference between the groups' largest and smallest mean budget (group "
                 "membership shuffled); 95 % bootstrap interval, each group resampled alone"),
        "details": {"column": column, "best": best, "worst": worst, "n_best": sizes[best], "n_worst": sizes[worst],
                    "norm": norm, "unit": unit or "L2 norm", "mean_budget": means,
                    "mann_whitney_p_unadjusted": u_p, "judged_groups": len(judged), "min_gap": min_gap,
                    "relative_gap": relative, "severity": "medium" if relative >= 0.3 else "low", "detail": detail},
    }, small
