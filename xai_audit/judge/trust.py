"""How far an explanation can be trusted: faithfulness, sanity, localisation, agreement.

The host computes these for every explainer alike, from its maps, the model
and (for sanity) the explainer itself. Quantus supplies the metrics it has;
what it lacks is written here, and each such place says so.

* **Faithfulness.** Deletion: pixels set to black in the map's order, most
  important first, recording the target probability (as Quantus
  ``PixelFlipping`` does; by hand, so that its canvases share full passes
  with insertion's: a test checks it against Quantus). Insertion: pixels of
  the image revealed in the same order over a blurred copy (Petsiuk et al.,
  2018; by hand: Quantus has no insertion curve). Both curves are summarised
  by their area (AUC) and compared with the same curves for a random pixel
  order. A faithful map
  gives a low deletion AUC and a high insertion AUC; per heatmap the score is
  insertion AUC - deletion AUC.
* **Sanity.** The cascading model-parameter randomisation test (Adebayo et
  al., 2018): the model's layers are re-initialised from the top down and the
  explainer re-run on the randomised copy; the Spearman rank correlation of
  the absolute maps (scipy's ``spearmanr``) says how much the
  map survived. A map that barely changes once every layer is random does not
  explain the model. The correlation is taken over the pixels where either
  map is non-zero: a pixel both maps leave at exactly zero is a tie that the
  rank correlation counts as agreement, though it says nothing about the
  ordering the test asks after. On a black background explained against a
  black baseline (Integrated Gradients on digits: attribution is zero wherever
  the input equals the baseline, whatever the weights) those ties are a third
  of the image and lift a 0.44 to 0.82 (issue 18); the all-pixel value is kept
  beside it (``final_similarity_all_pixels``), with the share of such pixels.
  Maps without exact zeros (most maps of natural images) get the same number
  as before. The cascade is by hand: Quantus ``MPRT`` re-explains
  once per parameterised layer (over a hundred for a ViT-base) and re-explains
  the unchanged model even when given its maps; here the cascade is cut into
  a few stages on a few images.
* **Localisation**, where the data set has region masks and names the regions
  that define each class: the share of absolute attribution inside them,
  widened by the pointing game's tolerance (Quantus ``RelevanceMassAccuracy``),
  against their share of the image's area, and the pointing game (Quantus
  ``PointingGame``: is the map's maximum inside them). The attribution mass per region and class uses
  ``RelevanceMassAccuracy`` region by region.
* **Agreement** between explainers: the Spearman rank correlation of their
  absolute maps, averaged over a coarse grid (16 x 16 at most) so that
  pixel-level noise does not hide shared structure.

**Cost**, in model passes (a forward + backward pass of an image counts two forward passes,
``BACKWARD_WEIGHT``). The curves of one image at k steps take 2k + 1 canvases (deletion and insertion
share the whole image; the blurred copy and the black image end them), and its random pixel order 2k - 2
more (the same three ends, shared); the random order's curves are kept per image and steps, so an
explainer scored like one before it reuses them. The sanity check re-runs the explainer on randomised
copies, each stage on its few images. By default (``budget: explainer``) the step is sized from what its
explainer states it spent (``ExplainerPlugin.model_passes``): every explained image at 12 steps with the
sanity check of :func:`sanity_size` where that fits within the explainer's own passes; else fewer steps
(6, then 3), a sanity check of one image at one stage (every layer random), and finally the curves on an
evenly spread subset of the explained images. A one-pass method (Grad-CAM, saliency) gets 3 steps on
about a sixth of its images: its scores are thinner, and results.json (``trust.budget``), the verdict
and the report say on how many images and steps they rest, with the bootstrap interval of the curves'
gain over the random order. ``budget: full`` (or the plan's own ``images``, ``steps``, ``sanity_*``)
asks for the full scores. An explainer that states no cost gets the full size (``budget.mode``
``unknown cost``). ``python -m bench --only audit`` measures it.

Quantus is imported only when a metric runs (its import takes seconds).
"""

from __future__ import annotations

import copy
import hashlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from xai_audit.contract.batching import best_batch_size, chunks, forward_in_best_layout
from xai_audit.contract.types import BACKWARD_WEIGHT, FACE_REGIONS, ExplainerPlugin, ModelAdapter, Sample

#: bump when a metric's definition changes, so cached trust results are recomputed
TRUST_VERSION = 4  # 2: sanity's similarity leaves out the pixels both maps leave at zero; 3: deletion by hand in the insertion's passes, default sanity size; 4: sized by its explainer's passes
#: Spearman similarity of |map| between the trained and the fully randomised model at or above which
#: the maps "barely change" (sanity fails) ...
SANITY_THRESHOLD = 0.7
#: ... and at or above which they keep part of their structure (sanity passes only partly: part of
#: what they show is the image itself, e.g. its edges for gradient x input methods)
SANITY_PARTLY = 0.4
#: insertion - deletion must beat the random order's by this much to count as faithful
FAITHFUL_MARGIN = 0.02
#: coarse grid side for agreement
AGREEMENT_GRID = 16
#: image pairs drawn in the sanity figure
_SANITY_SHOWN = 4


#: the default sanity check re-explains at most this share of the explained images' count, all stages together
#: (a third: with the curves' 2k + 1 passes an image, the trust step then costs less than an explainer that
#: spends 1.5 (2k + 1) = 38 passes an image or more, as Integrated Gradients does at its default 50 steps)
SANITY_BUDGET = 1 / 3
#: ... on at most this many images (the verdict reads the last stage; more images barely move it)
SANITY_MAX_SAMPLES = 4


#: curve steps of the full trust scores, and the fewer ones a budget falls back to
FULL_STEPS = 12
STEP_CHOICES = (12, 6, 3)


@dataclass
class TrustSettings:
    """What the plan says; None: chosen by :func:`plan_budget` (``budget: explainer``: at most the explainer's
    own passes; ``full``: every explained image at 12 steps, the sanity check of :func:`sanity_size`)."""

    steps: int | None = None
    sanity_samples: int | None = None
    sanity_stages: int | None = None
    regions: list[str] | None = None
    images: int | None = None
    budget: str = "explainer"


def sanity_size(n_explained: int, samples: int | None, stages: int | None) -> tuple[int, int]:
    """(images, stages) of the sanity check: what the plan says, and where it says nothing, a size whose
    re-explanations (images x stages) are at most ``SANITY_BUDGET`` of the ``n_explained`` images the explainer
    explained (at least one): the check's model passes are then at most a third of the explainer's own.

    The cascade's last stage (every layer random) decides the verdict, so the budget goes to images before
    stages: 3 stages from 9 re-explanations up, 2 from 4, else 1.
    """
    budget = max(1, int(n_explained * SANITY_BUDGET + 1e-9))
    if stages is None and samples:
        stages = max(1, min(3, budget // samples))
    elif stages is None:
        stages = 3 if budget >= 9 else 2 if budget >= 4 else 1
    if samples is None:
        samples = max(1, min(SANITY_MAX_SAMPLES, budget // stages))
    return int(samples), int(stages)


@dataclass(frozen=True)
class Budget:
    """What one explainer's trust step runs: the curves of ``images`` of the ``of`` explained images at
    ``steps`` steps, the sanity check on ``sanity_samples`` images at ``sanity_stages`` cascade stages
    (``sanity_runs`` re-explanations of them, 0: none), and the passes that costs at most, against the
    explainer's own (``explainer_passes``; None: the explainer states none). ``mode``: ``explainer`` (sized to
    fit them), ``full`` or ``unknown cost``."""

    images: int
    of: int
    steps: int
    sanity_samples: int
    sanity_stages: int
    sanity_runs: int
    curve_passes: int
    random_order_passes: int
    sanity_passes: int
    explainer_passes: int | None
    mode: str

    @property
    def passes(self) -> int:
        return self.curve_passes + self.random_order_passes + self.sanity_passes

    def rows(self) -> np.ndarray:
        """The explained images the curves score: spread evenly over the selection (its cases in order)."""
        return _spread(self.of, self.images)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "images": self.images, "of": self.of, "steps": self.steps,
            "sanity_samples": self.sanity_samples if self.sanity_runs else 0,
            "sanity_stages": self.sanity_runs, "passes": self.passes, "explainer_passes": self.explainer_passes,
            "within": None if self.explainer_passes is None else bool(self.passes <= self.explainer_passes),
            "passes_counted": "forward passes; a forward + backward pass counts %d" % BACKWARD_WEIGHT,
        }

    def model_passes(self) -> dict[str, Any]:
        """results.json's ``trust.model_passes``."""
        return {"curve_forward_images": self.curve_passes, "random_order_forward_images": self.random_order_passes,
                "sanity_re_explanations": self.sanity_samples * self.sanity_runs if self.sanity_runs else 0,
                "sanity_passes": self.sanity_passes, "total": self.passes, "explainer": self.explainer_passes}


def _spread(n: int, m: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, max(1, min(m, n))).round().astype(int))


def plan_budget(session: "TrustSession", plugin: ExplainerPlugin | None, sanity: bool = True) -> Budget:
    """The size of one explainer's trust step (see the module's **Cost**): what the plan fixes stands; the
    rest is the full size where ``budget: full`` or the explainer states no cost, else the largest that its
    explainer's own passes pay for, preferring every image (fewer steps, then a one-image sanity check),
    then as many images as fit at 3 steps. At least one image at 3 steps: ``within`` says if that was over."""
    settings = session.settings
    n = len(session.samples)
    shape = tuple(session.samples[0].image.shape)
    hw = int(shape[-1] * shape[-2])
    module = session.model.module
    layers = len(parameterised_layers(module)) if sanity and plugin is not None and module is not None else 0

    def passes_of(count: int, maps_only: bool) -> int | None:
        if plugin is None or count <= 0:
            return 0 if count <= 0 else None
        try:
            got = plugin.model_passes(session.model, count, shape, maps_only=maps_only)
        except Exception:  # a plugin's estimate that fails is no estimate
            return None
        return None if got is None else int(got.weighed)

    own = passes_of(n, False)

    def make(m: int, k: int, samples: int, stages: int, mode: str) -> Budget:
        samples = min(samples, n)
        runs = len(_stage_cuts(layers, stages)) if layers and samples else 0
        per_run = passes_of(samples, True) if runs else 0
        return Budget(images=m, of=n, steps=k, sanity_samples=samples, sanity_stages=stages, sanity_runs=runs,
                      curve_passes=m * (2 * k + 1), random_order_passes=m * (2 * k - 2),
                      sanity_passes=runs * (per_run or 0), explainer_passes=own, mode=mode)

    full_samples, full_stages = sanity_size(n, settings.sanity_samples, settings.sanity_stages)
    full_k = _curve_steps(settings.steps or FULL_STEPS, hw)
    full_m = min(settings.images or n, n)
    if settings.budget == "full" or own is None:
        return make(full_m, full_k, full_samples, full_stages, "full" if settings.budget == "full" else "unknown cost")
    steps = [full_k] if settings.steps else list(dict.fromkeys(_curve_steps(k, hw) for k in STEP_CHOICES))
    sanity_choices = [(full_samples, full_stages)]
    if settings.sanity_samples is None or settings.sanity_stages is None:
        sanity_choices.append((settings.sanity_samples if settings.sanity_samples is not None else 1,
                               settings.sanity_stages or 1))
    for samples, stages in sanity_choices:  # every image, the most steps and the largest sanity check that fit
        for k in steps:
            chosen = make(full_m, k, samples, stages, "explainer")
            if chosen.passes <= own:
                return chosen
    if settings.sanity_samples is None:
        sanity_choices = sanity_choices[1:] + [(0, 1)]
    k = steps[-1]
    for samples, stages in sanity_choices:  # then as many images as fit at the fewest steps
        fixed = make(0, k, samples, stages, "explainer").passes
        m = min(full_m, (own - fixed) // (4 * k - 1)) if own > fixed else 0
        if m >= 1:
            return make(int(m), k, samples, stages, "explainer")
    return make(1, k, *sanity_choices[0], "explainer")  # the least there is, over the explainer's passes


@dataclass
class TrustSession:
    """What the trust metrics of one audit share: the model, the explained images, and the random pixel
    order's curves (per image and steps, computed with the first explainer's curves that needs them)."""

    model: ModelAdapter
    samples: Sequence[Sample]
    targets: np.ndarray
    classes: list[str]
    seed: int
    settings: TrustSettings = field(default_factory=TrustSettings)
    class_regions: Mapping[str, Sequence[str]] = field(default_factory=dict)
    _random: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def images(self) -> np.ndarray:
        return np.stack([s.image for s in self.samples]).astype(np.float32)

    def random_map(self, i: int) -> np.ndarray:
        sample = self.samples[i]
        return _random_map(self.seed, sample.id, sample.image.shape[1:])


# --------------------------------------------------------------------------- the whole assessment


def assess(session: TrustSession, plugin: ExplainerPlugin | None, maps: np.ndarray) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every trust metric for one explainer's maps: (results.json data, arrays for figures).

    ``plugin`` is re-run for the sanity check; None skips it.
    """
    runs_sanity = plugin is not None and session.settings.sanity_samples != 0 and session.model.module is not None
    budget = plan_budget(session, plugin, runs_sanity)
    runs_sanity = runs_sanity and budget.sanity_runs > 0
    data: dict[str, Any] = {"version": TRUST_VERSION, "budget": budget.as_dict(), "model_passes": budget.model_passes()}
    arrays: dict[str, np.ndarray] = {}
    faith, curves = faithfulness(session, maps, budget)
    data["faithfulness"] = faith
    arrays.update(curves)
    if runs_sanity:
        data["sanity"], sanity_maps = sanity(session, plugin, maps, budget)
        arrays.update(sanity_maps)
    else:
        data["sanity"] = None
    data["localisation"] = localisation(session, maps)
    data["per_sample"] = _per_sample(session, faith, data["localisation"])
    data["verdict"] = verdict(data)
    return data, arrays


def thin(budget: Mapping[str, Any] | None) -> bool:
    """Whether the curves score fewer images or steps than the full trust scores."""
    return bool(budget) and (budget.get("images") != budget.get("of") or budget.get("steps", 0) < FULL_STEPS)


def budget_note(budget: Mapping[str, Any] | None, faith: Mapping[str, Any]) -> str:
    """Where the scores rest on fewer images or steps than the full ones: how few, and the gain's interval."""
    if not thin(budget):
        return ""
    ci = faith.get("gain_ci")
    interval = (f", gain over the random order {faith['gain']:.2f} (95 % CI {ci[0]:.2f} to {ci[1]:.2f})"
                if ci and faith.get("gain") is not None else "")
    return (f"; thin evidence: the curves score {budget['images']} of the {budget['of']} explained images at "
            f"{budget['steps']} steps{interval}, so that the check costs at most what the explainer did "
            "(explain.trust.budget: full scores them all)")


def verdict(trust: Mapping[str, Any]) -> dict[str, str]:
    """``{level, text}``: 'trusted', 'weak' or 'not trusted', with the reason in words."""
    sanity_result = trust.get("sanity")
    faith = trust.get("faithfulness") or {}
    note = ties_note(sanity_result) if sanity_result else ""  # where ties at zero would have changed the verdict
    note += budget_note(trust.get("budget"), faith)
    if sanity_result and sanity_result.get("verdict") == "fails":
        return {
            "level": "not trusted",
            "text": (
                f"fails the sanity check: with every layer's weights randomised its maps still correlate "
                f"{sanity_result['final_similarity']:.2f} with the trained model's, so they show the image more than the model"
                + note
            ),
        }
    gain, random_gain = faith.get("score"), faith.get("random_score")
    if sanity_result and sanity_result.get("verdict") == "partly":
        return {
            "level": "weak",
            "text": (
                f"passes the sanity check only partly: with every layer's weights randomised its maps still correlate "
                f"{sanity_result['final_similarity']:.2f} with the trained model's, so part of what they show is the "
                "image itself (its edges, say) rather than what the model learned" + note
            ),
        }
    ci = faith.get("gain_ci")
    if thin(trust.get("budget")) and gain is not None and random_gain is not None and gain > random_gain + FAITHFUL_MARGIN \
            and (ci is None or ci[0] <= FAITHFUL_MARGIN):
        return {  # on a few images a noise map beats a random order by chance: the interval must clear the margin
            "level": "weak",
            "text": "not shown more faithful than a random map on the few images its budget scores: the interval of "
            f"its gain over the random order does not clear {FAITHFUL_MARGIN}"
            + ("" if ci else " (one image: no interval)") + note,
        }
    if gain is None or random_gain is None or gain <= random_gain + FAITHFUL_MARGIN:
        return {
            "level": "weak",
            "text": "not more faithful than a random map: removing or revealing its top pixels moves the score "
            "no more than random pixels do" + note,
        }
    text = (
        f"faithful (insertion - deletion {gain:.2f} against {random_gain:.2f} for a random order)"
        + (", and its maps change when the weights are randomised"
           if sanity_result and sanity_result.get("verdict") == "passes" else "; sanity not checked")
        + note
    )
    return {"level": "trusted", "text": text}


# --------------------------------------------------------------------------- faithfulness


def faithfulness(session: TrustSession, maps: np.ndarray,
                 budget: Budget | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Deletion and insertion against a random pixel order, on the images and steps of ``budget`` (None: every
    explained image at the plan's steps, 12 by default)."""
    n, (height, width) = len(session.samples), session.samples[0].image.shape[1:]
    k = budget.steps if budget else _curve_steps(session.settings.steps or FULL_STEPS, height * width)
    rows = budget.rows() if budget else np.arange(n)
    d_auc, i_auc, d_curve, i_curve, rd_curve, ri_curve = _deletion_insertion(session, maps, rows, k)
    x = np.linspace(0.0, 1.0, k + 1)
    rd_auc, ri_auc = _auc(rd_curve, x), _auc(ri_curve, x)
    score = i_auc - d_auc
    random_score = ri_auc - rd_auc
    gain = score - random_score
    data = {
        "steps": int(k),
        "images": int(len(rows)),
        "of": int(n),
        "sample_ids": [session.samples[i].id for i in rows],
        "deletion_auc": float(d_auc.mean()),
        "insertion_auc": float(i_auc.mean()),
        "random_deletion_auc": float(rd_auc.mean()),
        "random_insertion_auc": float(ri_auc.mean()),
        "score": float(score.mean()),
        "random_score": float(random_score.mean()),
        "gain": float(gain.mean()),
        # Student's t 95 % intervals over the scored images (none from a single image)
        "score_ci": mean_ci(score),
        "gain_ci": mean_ci(gain),
        "beats_random_share": float(np.mean(score > random_score)),
        "deletion_auc_per_sample": d_auc.tolist(),
        "insertion_auc_per_sample": i_auc.tolist(),
        "random_score_per_sample": random_score.tolist(),
        "deletion": "pixels set to black, most important first (as Quantus PixelFlipping)",
        "insertion": "pixels revealed over a blurred copy, most important first",
    }
    arrays = {
        "deletion_curve": d_curve.mean(0).astype(np.float32),
        "insertion_curve": i_curve.mean(0).astype(np.float32),
        "random_deletion_curve": rd_curve.mean(0).astype(np.float32),
        "random_insertion_curve": ri_curve.mean(0).astype(np.float32),
    }
    return data, arrays


def mean_ci(values: np.ndarray, confidence: float = 0.95) -> list[float] | None:
    """Student's t interval of the mean of ``values`` (a few images: wide, as it should be); None for one."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return None
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return [float(values.mean() - half), float(values.mean() + half)]


def _deletion_insertion(session: TrustSession, maps: np.ndarray, rows: np.ndarray, k: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per scored image its deletion and insertion AUCs (M,), its curves (M, K + 1), and the random order's
    curves (M, K + 1), x from 0 to all pixels. The random order's curves an earlier explainer computed at
    the same steps are reused; the rest go through the model in the same passes as this map's."""
    images = session.images[rows]
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32))[rows]
    targets = np.asarray(session.targets, dtype=np.int64).reshape(-1)[rows]
    missing = [j for j, i in enumerate(rows) if (k, int(i)) not in session._random]
    randoms = [session.random_map(int(rows[j])) if j in missing else None for j in range(len(rows))]
    batch = best_batch_size(session.model, images.shape[1:], backward=False)
    deletion, insertion, r_deletion, r_insertion = _curve_set(session.model, images, targets, maps, randoms, k, batch)
    for j in missing:
        session._random[(k, int(rows[j]))] = (r_deletion[j], r_insertion[j])
    r_deletion = np.stack([session._random[(k, int(i))][0] for i in rows])
    r_insertion = np.stack([session._random[(k, int(i))][1] for i in rows])
    x = np.linspace(0.0, 1.0, k + 1)
    return _auc(deletion, x), _auc(insertion, x), deletion, insertion, r_deletion, r_insertion


def _curve_steps(requested: int, n_pixels: int) -> int:
    """The number of curve steps: 3·m with m dividing H·W, the m nearest below ``requested / 3`` (the
    steps Quantus' ``PixelFlipping`` takes when it removes ``3·H·W / k`` values a step, kept since)."""
    m = max(1, requested // 3)
    while m > 1 and n_pixels % m:
        m -= 1
    return 3 * m


def _curves(model: ModelAdapter, images: np.ndarray, targets: np.ndarray, maps: np.ndarray,
            k: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves (N, K + 1) each of ``maps``, in shared passes of ``batch`` images."""
    deletion, insertion, _, _ = _curve_set(model, images, targets, maps, [None] * len(images), k, batch)
    return deletion, insertion


def _curve_set(model: ModelAdapter, images: np.ndarray, targets: np.ndarray, maps: np.ndarray,
               randoms: Sequence[np.ndarray | None], k: int, batch: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Deletion and insertion curves (N, K + 1) of ``maps`` and of ``randoms[i]`` where it is not None (NaN
    rows elsewhere), every canvas in full passes of ``batch`` images.

    Deletion sets pixels to black (0 in every channel) in the map's order, most important first, as Quantus
    ``PixelFlipping`` does with ``perturb_baseline=0``; insertion reveals the image over a blurred copy in the
    same order (Quantus has no insertion curve). Both are written here so that every canvas of both curves
    goes through the model in full passes at its best batch size: Quantus runs one pass per step over the
    images it is given (four images a pass for four explained images, where a pass of 32 costs about the
    same). The three canvases no order changes are run once for both orders: the whole image (deletion's
    first, insertion's last), the blurred copy (insertion's first) and the black image (deletion's last). The
    model sees ``2k + 1`` canvases per image, and ``2k - 2`` more where the random order comes along.
    """
    import torch

    n, _, height, width = images.shape
    counts = np.round(np.linspace(0, height * width, k + 1)).astype(int)[1:k]  # the steps between the ends
    blurred = _blur(images)
    deletion, insertion = np.zeros((n, k + 1)), np.zeros((n, k + 1))
    r_deletion, r_insertion = np.full((n, k + 1), np.nan), np.full((n, k + 1), np.nan)
    widest = 3 + 2 * (k - 1) * (2 if any(r is not None for r in randoms) else 1)
    group = max(1, batch // widest)  # images whose canvases fit one pass
    forward = forward_in_best_layout(model, images.shape[1:], backward=False)
    for start in range(0, n, group):
        part = list(range(start, min(n, start + group)))
        canvases, where = [], []
        for i in part:
            orders = [maps[i]] + ([randoms[i]] if randoms[i] is not None else [])
            first = sum(len(c) for c in canvases)
            canvases.append(np.stack([blurred[i], images[i], np.zeros_like(images[i])]))
            for m in orders:
                rank = np.empty(height * width, dtype=np.int64)
                rank[np.argsort(-m.reshape(-1), kind="stable")] = np.arange(height * width)
                shown = rank.reshape(1, height, width) < counts[:, None, None]  # (K - 1, H, W): the top pixels
                canvases.append(np.where(shown[:, None], images[i], blurred[i]).astype(images.dtype))
                canvases.append(np.where(shown[:, None], 0.0, images[i]).astype(images.dtype))
            where.append((i, first, len(orders)))
        x = torch.as_tensor(np.concatenate(canvases), device=model.device)
        with torch.no_grad():
            probs = np.concatenate([torch.softmax(forward(x[chunk]), dim=1).cpu().numpy()
                                    for chunk in chunks(len(x), batch)])  # never one canvas alone in a pass
        for i, first, n_orders in where:
            p = probs[first: first + 3 + 2 * (k - 1) * n_orders, targets[i]]
            blur_p, whole_p, black_p = p[:3]
            for o, (d_out, i_out) in enumerate([(deletion, insertion), (r_deletion, r_insertion)][:n_orders]):
                at = 3 + 2 * (k - 1) * o
                i_out[i] = np.concatenate([[blur_p], p[at: at + k - 1], [whole_p]])
                d_out[i] = np.concatenate([[whole_p], p[at + k - 1: at + 2 * (k - 1)], [black_p]])
    return deletion, insertion, r_deletion, r_insertion


def _blur(images: np.ndarray) -> np.ndarray:
    import torch

    side = min(images.shape[-2:])
    k = max(3, (side // 4) | 1)
    x = torch.as_tensor(images)
    return torch.nn.functional.avg_pool2d(x, kernel_size=k, stride=1, padding=k // 2, count_include_pad=False).numpy()


def _auc(curves: np.ndarray, x: np.ndarray) -> np.ndarray:
    return ((curves[:, 1:] + curves[:, :-1]) / 2 * np.diff(x)).sum(axis=1)


def _random_map(seed: int, sample_id: str, shape: tuple[int, ...]) -> np.ndarray:
    digest = hashlib.sha256(f"trust-random:{seed}:{sample_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little")).random(shape).astype(np.float32)


# --------------------------------------------------------------------------- sanity


def sanity(session: TrustSession, plugin: ExplainerPlugin, maps: np.ndarray,
           budget: Budget | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Cascading randomisation from the top layer down; Spearman of |maps| at each stage (by hand, see above),
    on the images and stages of ``budget`` (None: :func:`sanity_size` of the plan's settings)."""
    n = len(session.samples)
    if budget is not None:
        count, n_stages = budget.sanity_samples, budget.sanity_stages
    else:
        count, n_stages = sanity_size(n, session.settings.sanity_samples, session.settings.sanity_stages)
    chosen = _spread(n, count)
    subset = [session.samples[i] for i in chosen]
    targets = np.asarray(session.targets).reshape(-1)[chosen]
    original = np.asarray(maps)[chosen]
    wrapper = copy.deepcopy(_as_module(session.model))
    layers = parameterised_layers(wrapper.net)
    if not layers:
        return {"verdict": "not run", "reason": "the model has no parameters", "stages": []}, {}
    cuts = _stage_cuts(len(layers), n_stages)
    stages, last_maps = [], original
    done = 0
    for cut in cuts:
        for index in range(done, cut):
            name, module = layers[len(layers) - 1 - index]  # top (output side) first
            randomise_layer(module, session.seed + index)
        done = cut
        last_maps = np.asarray(plugin.explain_maps(wrapper.adapter, subset, targets, session.seed))
        similarity, zero_in_both = spearman_where_either(np.abs(original), np.abs(last_maps))
        stages.append({
            "layers_randomised": cut,
            "of": len(layers),
            "down_to": layers[len(layers) - cut][0],
            "similarity": float(np.mean(similarity)),
            "similarity_all_pixels": float(np.mean(spearman(np.abs(original), np.abs(last_maps)))),
            "zero_in_both": float(np.mean(zero_in_both)),
        })
    final = stages[-1]["similarity"]
    data = {
        "test": "cascading model-parameter randomisation (Adebayo et al., 2018)",
        "similarity": ("Spearman rank correlation of |map|, trained vs randomised model, over the pixels where "
                       "either map is non-zero (a pixel both leave at zero is a tie, not agreement)"),
        "n_samples": int(len(subset)),
        "sample_ids": [s.id for s in subset],
        "stages": stages,
        "final_similarity": final,
        "final_similarity_all_pixels": stages[-1]["similarity_all_pixels"],
        "zero_in_both": stages[-1]["zero_in_both"],
        "threshold": SANITY_THRESHOLD,
        "partly_above": SANITY_PARTLY,
        "verdict": sanity_verdict(final),
        "verdict_all_pixels": sanity_verdict(stages[-1]["similarity_all_pixels"]),
    }
    return data, {
        "sanity_randomised_maps": last_maps.astype(np.float32),
        "sanity_original_maps": original.astype(np.float32),
        "sanity_images": np.stack([s.image for s in subset]).astype(np.float32),
    }


def sanity_verdict(similarity: float) -> str:
    """'fails' at or above SANITY_THRESHOLD, 'partly' at or above SANITY_PARTLY, else 'passes'."""
    return "fails" if similarity >= SANITY_THRESHOLD else ("partly" if similarity >= SANITY_PARTLY else "passes")


def ties_note(sanity_result: Mapping[str, Any]) -> str:
    """Where leaving out the pixels both maps leave at zero changed the verdict: the metric's part, in words."""
    everywhere, share = sanity_result.get("verdict_all_pixels"), sanity_result.get("zero_in_both")
    if everywhere is None or share is None or everywhere == sanity_result.get("verdict"):
        return ""
    return (f"; over every pixel it would be {sanity_result['final_similarity_all_pixels']:.2f} ({everywhere}), "
            f"because {share:.0%} of the pixels are exactly zero in both maps (a background the method cannot "
            "attribute to, whatever the weights), ties that a rank correlation counts as agreement: that part is "
            "the metric's, not the method's, and those pixels are left out")


def parameterised_layers(module: Any) -> list[tuple[str, Any]]:
    """Sub-modules that own parameters, in the order the model defines them (input side first)."""
    return [(name or type(m).__name__, m) for name, m in module.named_modules()
            if any(True for _ in m.parameters(recurse=False))]


def randomise_layer(module: Any, seed: int) -> None:
    """Re-initialise a layer as when it was built (``reset_parameters``, as Quantus does); other
    parameters are redrawn from a normal distribution with their own spread."""
    import torch

    torch.manual_seed(seed)
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
        return
    with torch.no_grad():
        for p in module.parameters(recurse=False):
            std = float(p.detach().float().std()) if p.numel() > 1 else 0.02
            p.normal_(0.0, std if math.isfinite(std) and std > 0 else 0.02)


def _stage_cuts(n_layers: int, stages: int) -> list[int]:
    """How many layers are random after each stage: the top layer first, every layer last."""
    if stages <= 1 or n_layers == 1:
        return [n_layers]
    cuts = [1] + [max(1, round(n_layers * i / (stages - 1))) for i in range(1, stages)]
    return sorted(set(cuts))


# --------------------------------------------------------------------------- localisation


def class_region_names(session: TrustSession, target: int) -> list[str]:
    if session.settings.regions:
        return list(session.settings.regions)
    name = session.classes[target] if 0 <= target < len(session.classes) else str(target)
    return list(session.class_regions.get(name, []))


def tolerance_px(shape: tuple[int, ...]) -> int:
    """The pointing game's tolerance (15 px at 224 px; Zhang et al., 2018) scaled to the image."""
    return max(1, int(round(min(shape[-2:]) * 15 / 224)))


def widen(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by ``pixels`` in every direction (a disc, not a square)."""
    from scipy import ndimage

    if pixels <= 0 or not mask.any():
        return mask
    return ndimage.distance_transform_edt(~mask) <= pixels


def localisation(session: TrustSession, maps: np.ndarray) -> dict[str, Any] | None:
    """Mass share inside the class-defining regions, their area share, and the pointing game.

    The regions are widened by the pointing game's tolerance (:func:`tolerance_px`):
    a map has the resolution of the layer or window it comes from, and thin
    features such as brows are narrower than a Grad-CAM cell.
    """
    rows, masks = [], []
    targets = np.asarray(session.targets).reshape(-1)
    for i, sample in enumerate(session.samples):
        names = [r for r in class_region_names(session, int(targets[i])) if sample.regions and r in sample.regions]
        if not names:
            continue
        mask = np.zeros(sample.image.shape[1:], dtype=bool)
        for r in names:
            mask |= np.asarray(sample.regions[r], dtype=bool)
        mask = widen(mask, tolerance_px(mask.shape))
        if mask.any():
            rows.append(i)
            masks.append(mask)
    if not rows:
        return None
    quantus = _quantus()
    a = np.nan_to_num(np.asarray(maps, dtype=np.float32)[rows])[:, None]
    s = np.stack(masks)[:, None]
    x = session.images[rows]
    y = targets[rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mass = quantus.RelevanceMassAccuracy(abs=True, normalise=False, disable_warnings=True)(
            model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s, channel_first=True)
        pointing = quantus.PointingGame(abs=False, normalise=False, disable_warnings=True)(
            model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s, channel_first=True)
    mass = np.asarray(mass, dtype=np.float64)
    pointing = np.asarray(pointing, dtype=np.float64)
    area = s.reshape(len(rows), -1).mean(axis=1)
    names = sorted({r for i in rows for r in class_region_names(session, int(targets[i]))})
    return {
        "regions": names,
        "tolerance_px": tolerance_px(session.samples[rows[0]].image.shape),
        "n": len(rows),
        "mass_share": float(np.nanmean(mass)),
        "area_share": float(area.mean()),
        "pointing_game": float(np.nanmean(pointing)),
        "sample_ids": [session.samples[i].id for i in rows],
        "mass_share_per_sample": [None if not np.isfinite(v) else float(v) for v in mass],
        "pointing_per_sample": [None if not np.isfinite(v) else bool(v) for v in pointing],
    }


def region_mass(samples: Sequence[Sample], targets: np.ndarray, maps: np.ndarray, classes: Sequence[str]) -> list[dict[str, Any]] | None:
    """Share of |attribution| per region, averaged per explained class, plus each region's share of the pixels.

    One row per class (``n`` images), a row ``all``, and a row ``pixel share``
    (what a map spread evenly would give). None when the samples have no regions.
    """
    with_regions = [i for i, s in enumerate(samples) if s.regions]
    if not with_regions:
        return None
    names = [r for r in FACE_REGIONS if all(r in samples[i].regions for i in with_regions)]
    names += sorted({r for i in with_regions for r in samples[i].regions} - set(names) - set(FACE_REGIONS))
    names = [r for r in names if all(r in samples[i].regions for i in with_regions)]
    if not names:
        return None
    quantus = _quantus()
    a = np.nan_to_num(np.asarray(maps, dtype=np.float32)[with_regions])[:, None]
    x = np.stack([samples[i].image for i in with_regions]).astype(np.float32)
    y = np.asarray(targets).reshape(-1)[with_regions]
    shares, area = {}, {}
    metric = quantus.RelevanceMassAccuracy(abs=True, normalise=False, disable_warnings=True)
    for r in names:
        s = np.stack([np.asarray(samples[i].regions[r], dtype=bool) for i in with_regions])[:, None]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shares[r] = np.asarray(metric(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s, channel_first=True),
                                   dtype=np.float64)
        area[r] = s.reshape(len(with_regions), -1).mean(axis=1)
    rows = []
    for k in sorted(set(y.tolist())):
        pick = y == k
        row: dict[str, Any] = {"class": classes[k] if 0 <= k < len(classes) else str(k), "n": int(pick.sum())}
        row.update({r: _nanmean(shares[r][pick]) for r in names})
        rows.append(row)
    rows.append({"class": "all", "n": len(with_regions), **{r: _nanmean(shares[r]) for r in names}})
    rows.append({"class": "pixel share", "n": len(with_regions), **{r: float(area[r].mean()) for r in names}})
    return rows


def class_mean_maps(targets: np.ndarray, maps: np.ndarray, classes: Sequence[str],
                    limit: int = 12) -> tuple[np.ndarray, list[str]]:
    """Mean map per explained class (K, H, W) and their titles; at most ``limit`` classes, the most explained."""
    targets = np.asarray(targets).reshape(-1)
    counts = {k: int((targets == k).sum()) for k in set(targets.tolist())}
    present = sorted(sorted(counts, key=lambda k: (-counts[k], k))[:limit])
    means = np.stack([np.asarray(maps)[targets == k].mean(axis=0) for k in present]).astype(np.float32)
    titles = [f"{classes[k] if 0 <= k < len(classes) else k} (n = {int((targets == k).sum())})" for k in present]
    return means, titles


# --------------------------------------------------------------------------- agreement


def agreement(maps: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean Spearman correlation of |maps| on a coarse grid, for each pair of explainers."""
    names = list(maps)
    pooled = {name: _pool(np.abs(np.nan_to_num(np.asarray(maps[name], dtype=np.float32)))) for name in names}
    out: dict[str, dict[str, float]] = {name: {} for name in names}
    for i, a in enumerate(names):
        out[a][a] = 1.0
        for b in names[i + 1 :]:
            if pooled[a].shape != pooled[b].shape:
                continue
            rho = float(np.mean(spearman(pooled[a], pooled[b])))
            out[a][b] = out[b][a] = rho
    return out


def _pool(maps: np.ndarray) -> np.ndarray:
    import torch

    n, height, width = maps.shape
    size = (min(height, AGREEMENT_GRID), min(width, AGREEMENT_GRID))
    return torch.nn.functional.adaptive_avg_pool2d(torch.as_tensor(maps)[:, None], size)[:, 0].numpy()


def spearman_where_either(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample Spearman rank correlation over the pixels where ``a`` or ``b`` is non-zero, and the share of
    pixels where both are zero; 0 where fewer than three pixels are left or a map is constant on them."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    keep = (a != 0) | (b != 0)
    rho = np.zeros(len(a), dtype=np.float64)
    for i in range(len(a)):
        if keep[i].sum() >= 3:
            rho[i] = spearman(a[i : i + 1, keep[i]], b[i : i + 1, keep[i]])[0]
    return rho, 1.0 - keep.mean(axis=1)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample Spearman rank correlation (scipy's ``spearmanr``, row by row: what Quantus's
    ``correlation_spearman`` computes, without importing Quantus where nothing else needs it); 0 where a map
    is constant."""
    from scipy.stats import spearmanr

    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    constant = (np.ptp(a, axis=1) == 0) | (np.ptp(b, axis=1) == 0)
    rho = np.zeros(len(a), dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in np.flatnonzero(~constant):  # a constant map has no ranking
            rho[i] = spearmanr(a[i], b[i])[0]
    return np.where(~np.isfinite(rho), 0.0, rho)


# --------------------------------------------------------------------------- helpers


def _per_sample(session: TrustSession, faith: Mapping[str, Any], loc: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """One row per explained image; the curves' numbers are None for an image the budget left unscored."""
    loc_index = {sid: i for i, sid in enumerate(loc["sample_ids"])} if loc else {}
    scored = {sid: j for j, sid in enumerate(faith["sample_ids"])}
    out = []
    for sample in session.samples:
        j = scored.get(sample.id)
        d = faith["deletion_auc_per_sample"][j] if j is not None else None
        ins = faith["insertion_auc_per_sample"][j] if j is not None else None
        row: dict[str, Any] = {
            "id": sample.id,
            "deletion_auc": d,
            "insertion_auc": ins,
            "score": ins - d if j is not None else None,
            "random_score": faith["random_score_per_sample"][j] if j is not None else None,
        }
        if loc and sample.id in loc_index:
            row["mass_in_class_regions"] = loc["mass_share_per_sample"][loc_index[sample.id]]
            row["pointing_hit"] = loc["pointing_per_sample"][loc_index[sample.id]]
        out.append(row)
    return out


def _nanmean(values: np.ndarray) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def _as_module(model: ModelAdapter) -> Any:
    """The adapter as a torch module (display-space images -> logits) for Quantus and for deep copies.

    ``net`` is the adapter's own module, registered so that ``deepcopy`` copies
    it once and the copied adapter's ``module`` is the copied ``net``.
    """
    import torch

    class AdapterModule(torch.nn.Module):
        def __init__(self, adapter: ModelAdapter):
            super().__init__()
            self.net = adapter.module
            self.adapter = adapter

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.adapter.forward(x)

        def train(self, mode: bool = True) -> "AdapterModule":
            # the adapter's module stays as loaded (in eval mode): a torch.export program refuses train()/eval()
            self.training = mode
            return self

    return AdapterModule(model).eval()


def _quantus() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import quantus
    return quantus


# --------------------------------------------------------------------------- one explainer, for the runner


def code_version() -> str:
    """A hash of this module's source: cached trust results are recomputed after any change to it."""
    from pathlib import Path

    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def explainer_trust(session: TrustSession, plugin: ExplainerPlugin | None, maps: np.ndarray) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """:func:`assess` plus the attribution mass per region and class (``region_mass``)."""
    data, arrays = assess(session, plugin, maps)
    rows = region_mass(session.samples, session.targets, maps, session.classes)
    data["region_mass"] = [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows] if rows else None
    return data, arrays


def attach(exp: Any, entry: dict[str, Any], data: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
           classes: Sequence[str]) -> None:
    """Put the trust results where results.json and the report look for them.

    ``entry["trust"]`` (results.json), the ``region_mass`` table, and figure
    specs with their arrays on the explanation (curves, sanity, class means).
    """
    trust = {k: v for k, v in data.items() if k != "region_mass"}
    entry["trust"] = trust
    if data.get("region_mass"):
        exp.tables["region_mass"] = data["region_mass"]
    exp.arrays.update({f"trust__{k}": np.asarray(v) for k, v in arrays.items()})
    means, titles = class_mean_maps(exp.targets, exp.maps, classes)
    exp.arrays["trust__class_means"] = means
    exp.figures[:0] = _trust_figures(exp, trust, arrays, titles)


def _trust_figures(exp: Any, trust: Mapping[str, Any], arrays: Mapping[str, np.ndarray], mean_titles: list[str]) -> list[dict[str, Any]]:
    figures: list[dict[str, Any]] = [{
        "kind": "heatmaps",
        "title": f"{exp.method}: mean map per explained class",
        "maps": {"array": "trust__class_means"},
        "titles": mean_titles,
        "signed": bool(exp.signed),
        "columns": min(7, len(mean_titles)),
        "colorbar": "mean attribution",
        "caption": "The mean map of the images explained for each class (the class explained), one colour scale.",
        "alt": f"Mean {exp.method} map for each of {len(mean_titles)} explained classes.",
    }]
    faith = trust.get("faithfulness") or {}
    if "deletion_curve" in arrays:
        k = len(arrays["deletion_curve"])
        figures.append({
            "kind": "lines",
            "title": "Deletion and insertion curves (mean over the explained images)",
            "x": np.linspace(0, 1, k).round(4).tolist(),
            "series": [
                {"label": f"deletion (AUC {faith.get('deletion_auc', float('nan')):.2f})", "y": {"array": "trust__deletion_curve"}, "color": "#b8322a"},
                {"label": f"deletion, random order ({faith.get('random_deletion_auc', float('nan')):.2f})",
                 "y": {"array": "trust__random_deletion_curve"}, "style": "dashed", "color": "#b8322a"},
                {"label": f"insertion (AUC {faith.get('insertion_auc', float('nan')):.2f})", "y": {"array": "trust__insertion_curve"}, "color": "#2f6db3"},
                {"label": f"insertion, random order ({faith.get('random_insertion_auc', float('nan')):.2f})",
                 "y": {"array": "trust__random_insertion_curve"}, "style": "dashed", "color": "#2f6db3"},
            ],
            "xlabel": "share of pixels removed (deletion) or revealed (insertion)",
            "ylabel": "probability of the explained class",
            "caption": (
                "Deletion: pixels set to black, most important first; a faithful map makes the probability fall fast "
                "(low AUC). Insertion: pixels revealed over a blurred copy; a faithful map makes it rise fast (high AUC). "
                "The random-order curves are what a map without information gives."
            ),
            "alt": "Line plot of the class probability as pixels are deleted or inserted in the map's order and at random.",
            "height": 2.8,
        })
    sanity_result = trust.get("sanity")
    if sanity_result and sanity_result.get("stages") and "sanity_randomised_maps" in arrays:
        original = np.asarray(arrays["sanity_original_maps"])[:_SANITY_SHOWN]
        randomised = np.asarray(arrays["sanity_randomised_maps"])[:_SANITY_SHOWN]
        pairs = np.stack([m for pair in zip(original, randomised) for m in pair])
        exp.arrays["trust__sanity_pairs"] = pairs
        ids = sanity_result.get("sample_ids", [])[:_SANITY_SHOWN]
        titles = [t for sid in ids for t in (f"{sid}\ntrained", "all layers\nrandomised")]
        if "sanity_images" in arrays:
            exp.arrays["trust__sanity_images"] = np.repeat(np.asarray(arrays["sanity_images"])[:_SANITY_SHOWN], 2, axis=0)
        figures.append({
            "kind": "heatmaps",
            "title": (
                f"Sanity check: maps of the trained model beside the fully randomised one "
                f"(similarity {sanity_result['final_similarity']:.2f}, {sanity_result['verdict']})"
            ),
            "maps": {"array": "trust__sanity_pairs"},
            **({"images": {"array": "trust__sanity_images"}} if "sanity_images" in arrays else {}),
            "titles": titles,
            "signed": bool(exp.signed),
            "normalise": "each",
            "columns": min(8, len(titles)),
            "colorbar": "map ÷ its 99th pct.",
            "caption": (
                "Each pair: the map on the trained model, then on a copy whose every layer was re-initialised. "
                "Maps that look alike show the image, not what the model learned. Stage by stage (Spearman of |map|): "
                + ", ".join(f"{s['layers_randomised']}/{s['of']} layers {s['similarity']:.2f}" for s in sanity_result["stages"])
                + "."
            ),
            "alt": "Pairs of maps: trained model and weight-randomised model.",
        })
    return figures
