"""adversarial: the smallest L-infinity perturbation that changes each image's prediction.

    hypotheses:
      - adversarial: {max_images: 64, budgets: ["1/255", "2/255", "4/255", "8/255"], reference_budget: "2/255"}

For each audited image (a seeded subset of at most ``max_images``) an untargeted PGD attack (``steps`` signed
gradient steps on the margin between the clean prediction's logit and the best other one, no random start, so
it is deterministic; an attack stops as soon as its image flips) runs at the plan's ``budgets`` and
``max_budget`` in turn, smallest first, until one flips the image; a bisection then narrows the bracket
between the largest budget that did not flip it and the smallest that did to ``max_budget / 2 ** bisection``.
An image flipped at a budget counts as flipped at every larger one (the share flipped at each budget, with
Wilson intervals), and is not attacked there. An image that does not flip at ``max_budget`` is counted at
``max_budget`` (censored: its true budget is larger; the number is reported). With ``l2``, the same in L2.

captum's ``captum.robust.PGD`` takes one radius for a whole batch, so a per-image bisection would run one image
per batch; the few lines of PGD here take one budget and norm per image, and run every image's attacks (L∞ and
L2 together) through one batch of the model's best batch size (``best_batch_size``, as the explainers'
passes): an attack leaves as soon as its image flips and the next attack takes its place. Every attack's first
step starts from the clean image, whose gradient is computed once per image. Gradients come from
``context.model.forward`` (the torch module under the audit's input mapping); a black box is refused.

The hypothesis's own test: does more than ``tolerated_flip_share`` of the images flip at ``reference_budget``
(one-sided exact binomial test, Wilson interval)? Per group column: do the groups need different budgets (a
permutation test of the gap between the most and the least robust group's mean budget, with a bootstrap
interval; a ``bias`` finding when significant). Both enter the audit's Holm correction.
"""

from __future__ import annotations

import re
from collections import deque
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
    batch_slices,
    best_batch_size,
    bootstrap_gap_ci,
    in_best_layout,
    permutation_gap_test,
    wilson_ci,
)
from xai_audit_robustness._common import group_columns, seeded_subset, wilson

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
        norms = {"linf": (budgets, max_budget)}
        if o.l2:
            l2_budgets = list(o.l2_budgets)
            norms["l2"] = (l2_budgets, max(float(o.l2_max_budget), l2_budgets[-1]))
        found = _smallest(_Search(model, o.steps), images, target, norms, o.bisection)
        eps, censored, at = found["linf"]
        l2 = (*found["l2"], *norms["l2"]) if o.l2 else None
        return _result(context, o, samples, index, target, eps, censored, at, budgets, max_budget, l2)


def _smallest(search: "_Search", images: np.ndarray, target: np.ndarray,
              norms: dict[str, tuple[list[float], float]], bisection: int
              ) -> dict[str, tuple[np.ndarray, np.ndarray, dict[float, np.ndarray]]]:
    """Per norm ("linf", "l2": its budgets and max_budget), each image's smallest flipping budget (max_budget
    where none flips it: censored) and who flips at each budget.

    Each image climbs the ladder of budgets (and max_budget) until PGD flips it; a bisection then narrows the
    bracket between the largest budget that did not flip it and the smallest that did to the resolution
    max_budget / 2 ** bisection. An image flipped at some budget counts as flipped at every larger one (a
    perturbation within the smaller budget is within the larger), so its larger budgets are not attacked."""
    chains = {norm: [_Chain(i, norm, sorted(set(budgets) | {top}), top / 2 ** bisection) for i in range(len(images))]
              for norm, (budgets, top) in norms.items()}
    search.run(images, target, [c for mine in chains.values() for c in mine])
    out = {}
    for norm, (budgets, top) in norms.items():
        mine = chains[norm]
        flipped = np.array([c.hi is not None for c in mine])
        eps = np.array([top if c.hi is None else c.hi for c in mine], float)
        out[norm] = (eps, ~flipped, {b: np.array([c.hi is not None and c.hi <= b for c in mine]) for b in budgets})
    return out


class _Chain:
    """One image's search in one norm: up the ladder of budgets until PGD flips it, then a bisection of the
    bracket. ``hi`` is the smallest budget found to flip it (None: none yet), ``lo`` the largest found not to."""

    def __init__(self, image: int, norm: str, ladder: list[float], resolution: float):
        self.image, self.norm, self.ladder, self.resolution = image, norm, ladder, resolution
        self.rung = 0
        self.lo = 0.0
        self.hi: float | None = None

    def next_budget(self) -> float | None:
        """The budget of the next attack, or None when the search is done."""
        if self.hi is None:
            return self.ladder[self.rung] if self.rung < len(self.ladder) else None
        if self.hi - self.lo > self.resolution * (1 + 1e-9):
            return (self.lo + self.hi) / 2
        return None

    def record(self, budget: float, flipped: bool) -> None:
        if flipped:
            self.hi = budget
        else:
            self.lo = budget
            self.rung += self.hi is None


class _Search:
    """Untargeted PGD on the margin loss (L-infinity: signed steps, a box; L2: normalised steps, a ball), one
    budget and norm per attack, the attacks of every chain through one batch at the model's best batch size
    and memory layout (those the explainers' passes use).

    An attack leaves the batch as soon as its image flips, and its chain's next attack takes its place, so the
    passes stay full while chains remain. Every attack on an image takes its first step from the clean image,
    whose gradient is computed once per image for all of them; the check after an attack's last step needs no
    gradient and runs in forward passes of its own."""

    def __init__(self, model, steps: int):
        self.model = model
        self.steps = steps
        #: images through a forward pass with the input gradient, and through a forward pass alone (the benchmark's
        #: limit counts them)
        self.backward_passes = 0
        self.forward_passes = 0

    def run(self, images: np.ndarray, target: np.ndarray, chains: list[_Chain]) -> None:
        """Run every chain's attacks until each chain is done (its results are in the chain)."""
        import torch

        model = self.model
        shape = tuple(images.shape[1:])
        batch = max(2, best_batch_size(model, shape, backward=True))
        forward_batch = max(2, best_batch_size(model, shape, backward=False))
        x_all = in_best_layout(model, torch.as_tensor(images, device=getattr(model, "device", "cpu")), backward=True)
        t_all = torch.as_tensor(target, device=x_all.device, dtype=torch.long)
        grad0, clean_flipped = self._clean(x_all, t_all, batch)
        pools = {norm: _Pool(norm, batch, x_all, self.steps) for norm in dict.fromkeys(c.norm for c in chains)}
        ready = deque(chains)
        held: list[tuple[list[tuple[_Chain, float]], Any, Any]] = []  # after their last step: (attacks, images, targets)
        while True:
            # the chains ready for their next attack fill the rows that attacks left (or the batch grows to them)
            new: dict[str, list[tuple[_Chain, float]]] = {norm: [] for norm in pools}
            free = batch - sum(p.busy for p in pools.values())
            while free > 0 and ready:
                chain = ready.popleft()
                budget = chain.next_budget()
                if budget is None:
                    continue
                if clean_flipped[chain.image]:  # the model already disagrees with the target: no attack needed
                    chain.record(budget, True)
                    ready.append(chain)
                    continue
                new[chain.norm].append((chain, budget))
                free -= 1
            for norm, pool in pools.items():
                attacks = new[norm]
                index = torch.as_tensor([c.image for c, _ in attacks], device=x_all.device, dtype=torch.long)
                done = pool.fill(attacks, x_all[index], t_all[index], grad0[index])
                if done is not None:  # one step is all an attack takes: straight to its check
                    held.append(done)
            waiting = sum(len(h[0]) for h in held)
            if waiting and (waiting >= forward_batch or free > 0):
                self._check(held, forward_batch, ready)
                held = []
                continue
            live = [p for p in pools.values() if p.m]
            if not live:
                break
            x = live[0].x[: live[0].m] if len(live) == 1 else torch.cat([p.x[: p.m] for p in live])
            t = live[0].t[: live[0].m] if len(live) == 1 else torch.cat([p.t[: p.m] for p in live])
            with torch.enable_grad():
                grad, now = self._margin_grad(x, t)
            self.backward_passes += len(x)
            now = now.cpu().numpy()
            start = 0
            for pool in live:
                rows = slice(start, start + pool.m)
                start += pool.m
                for i in np.flatnonzero(now[rows]):
                    chain, budget = pool.members[i]
                    chain.record(budget, True)
                    ready.append(chain)
                done = pool.step(grad[rows], now[rows])
                if done is not None:
                    held.append(done)

    def _check(self, held, forward_batch: int, ready: deque) -> None:
        """Forward passes over the attacks that took their last step: did each flip its image?"""
        import torch

        attacks = [a for h in held for a in h[0]]
        x = held[0][1] if len(held) == 1 else torch.cat([h[1] for h in held])
        t = held[0][2] if len(held) == 1 else torch.cat([h[2] for h in held])
        flipped = []
        with torch.no_grad():
            for part in batch_slices(len(x), forward_batch):
                flipped.append(self.model.forward(x[part]).argmax(dim=1) != t[part])
        self.forward_passes += len(x)
        for (chain, budget), f in zip(attacks, torch.cat(flipped).cpu().numpy()):
            chain.record(budget, bool(f))
            ready.append(chain)

    def _clean(self, x: Any, t: Any, batch: int) -> tuple[Any, np.ndarray]:
        """The margin's gradient at every clean image (every attack's first step), and whether the model already
        disagrees with the target there."""
        import torch

        grads, flipped = [], []
        with torch.enable_grad():
            for part in batch_slices(len(x), batch):
                grad, now = self._margin_grad(x[part], t[part])
                grads.append(grad)
                flipped.append(now)
        self.backward_passes += len(x)
        return torch.cat(grads), torch.cat(flipped).cpu().numpy()

    def _margin_grad(self, x: Any, t: Any) -> tuple[Any, Any]:
        """The gradient of the margin (the target's logit minus the best other one) at images ``x``, and whether
        the prediction already differs from the target."""
        import torch

        x = x.detach().requires_grad_(True)
        logits = self.model.forward(x)
        now = logits.detach().argmax(dim=1) != t
        rows = torch.arange(len(x), device=x.device)
        other = logits.clone()
        other[rows, t] = -torch.inf
        margin = logits[rows, t] - other.max(dim=1).values
        (grad,) = torch.autograd.grad(margin.sum(), x)
        return grad, now


class _Pool:
    """The attacks of one norm under way, row by row in tensors allocated once for a full batch: the perturbed
    images, targets, budgets, and what keeps each image in its budget (L-infinity: the box it may move in; L2:
    the clean image). Rows ``[0, m)`` are in use but for the ``gaps`` that attacks left in the last step; new
    attacks fill the gaps first, and the last rows move into those they leave."""

    def __init__(self, norm: str, capacity: int, like: Any, steps: int):
        import torch

        images = torch.empty_like(like[:1]).expand(capacity, *like.shape[1:])
        per_image = ("x", "low", "high") if norm == "linf" else ("x", "x0")
        self.data = {name: torch.empty_like(images) for name in per_image}  # the images' memory layout
        self.data["t"] = torch.empty(capacity, dtype=torch.long, device=like.device)
        self.data["e"] = torch.empty((capacity, 1, 1, 1), dtype=like.dtype, device=like.device)
        self.norm, self.steps = norm, steps
        self.members: list[tuple[_Chain, float] | None] = []
        self.gaps: list[int] = []
        self.k = np.zeros(capacity, int)

    @property
    def m(self) -> int:
        return len(self.members)

    @property
    def busy(self) -> int:
        return len(self.members) - len(self.gaps)

    @property
    def x(self) -> Any:
        return self.data["x"]

    @property
    def t(self) -> Any:
        return self.data["t"]

    def fill(self, attacks: list[tuple[_Chain, float]], x0: Any, t: Any, grad0: Any) -> tuple | None:
        """New attacks on clean images ``x0``, each after its first step along the clean gradient ``grad0``: into
        the gaps, then at the end; the gaps left are closed. Returns the attacks done after that one step (with
        ``steps`` 1), with their images and targets, else None."""
        import torch

        if attacks:
            e = torch.tensor([b for _, b in attacks], dtype=x0.dtype, device=x0.device).view(-1, 1, 1, 1)
            values = {"t": t, "e": e}
            if self.norm == "linf":
                values["low"], values["high"] = (x0 - e).clamp_(min=0), (x0 + e).clamp_(max=1)
                values["x"] = self._linf(x0.clone(), grad0, e, values["low"], values["high"])
            else:
                values["x0"] = x0
                values["x"] = self._l2(x0.clone(), x0, grad0, e)
            if self.steps == 1:
                self._close_gaps()
                return attacks, values["x"], t
            rows = self.gaps[: len(attacks)]
            rows += range(self.m, self.m + len(attacks) - len(rows))
            self.gaps = self.gaps[len(attacks):]
            index = self._index(rows)
            for name, value in values.items():
                self.data[name].index_copy_(0, index, value)
            self.members += [None] * (max(rows) + 1 - self.m)
            for row, attack in zip(rows, attacks):
                self.members[row] = attack
            self.k[rows] = 1
        self._close_gaps()
        return None

    def step(self, grad: Any, flipped: np.ndarray) -> tuple | None:
        """One PGD step of every attack under way along ``grad`` (the margin's gradient at each row's image);
        the ``flipped`` rows leave. Returns the attacks that took their last step, with their images and
        targets (they leave too), or None."""
        m = self.m
        data = {name: value[:m] for name, value in self.data.items()}
        if self.norm == "linf":
            self._linf(data["x"], grad, data["e"], data["low"], data["high"])
        else:
            self._l2(data["x"], data["x0"], grad, data["e"])
        self.k[:m] += 1
        last = self.k[:m] >= self.steps
        finished = np.flatnonzero(last & ~flipped)
        done = None
        if len(finished):
            index = self._index(finished)
            done = ([self.members[i] for i in finished], data["x"][index], data["t"][index])
        self.gaps = [int(i) for i in np.flatnonzero(last | flipped)]
        for i in self.gaps:
            self.members[i] = None
        return done

    def _linf(self, x: Any, grad: Any, e: Any, low: Any, high: Any) -> Any:
        """A signed step, then back into the box around the clean image within [0, 1] (in place)."""
        import torch

        x.addcmul_(2.5 * e / self.steps, grad.sign(), value=-1)
        return torch.clamp(x, low, high, out=x)

    def _l2(self, x: Any, x0: Any, grad: Any, e: Any) -> Any:
        """A step along the normalised gradient, then back into the ball around the clean image and into [0, 1]
        (in place)."""
        import torch

        def norm(v: Any) -> Any:  # each image's Euclidean norm, (N, 1, 1, 1), in any memory layout without a copy
            return torch.linalg.vector_norm(v, dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)

        d = (x - x0).addcmul_((2.5 * e / self.steps) / norm(grad), grad, value=-1)
        d.mul_(torch.clamp(e / norm(d), max=1.0))
        return torch.add(x0, d, out=x).clamp_(0, 1)

    def _close_gaps(self) -> None:
        """Move the last attacks into the gaps left, so that rows ``[0, m)`` are all in use."""
        if not self.gaps:
            return
        m = self.busy
        gaps = [g for g in self.gaps if g < m]
        movers = [r for r in range(m, self.m) if self.members[r] is not None]
        if gaps:
            to, frm = self._index(gaps), self._index(movers)
            for value in self.data.values():
                value.index_copy_(0, to, value.index_select(0, frm))
            self.k[gaps] = self.k[movers]
            for g, r in zip(gaps, movers):
                self.members[g] = self.members[r]
        del self.members[m:]
        self.gaps = []

    def _index(self, rows: Any) -> Any:
        import torch

        return torch.as_tensor(np.asarray(rows), device=self.x.device, dtype=torch.long)


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
