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
  the absolute maps (Quantus's ``correlation_spearman``) says how much the
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

**Cost**, in images through the model (``cost``, in results.json as each
explainer's ``trust.model_passes``): 2k + 1 forward passes per explained image
for the curves (k steps, 12 by default), in passes at the model's best batch
size, and the sanity check's re-explanations on randomised copies, each costing
what the explainer spends on one image: by default at most a third of the explained
images' count, all stages together (``sanity_size``), so that the check costs at
most a third of its explainer. The random order's curves cost 2k + 1 passes per
image once per audit. An explainer that spends more than 1.5 (2k + 1) passes per
image (LIME, Occlusion, Integrated Gradients at their defaults) thus costs more
than its trust step; one that spends a single pass (saliency, Grad-CAM) has a trust
step bounded by the curves (``python -m bench --only audit`` measures both).

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
from xai_audit.contract.types import FACE_REGIONS, ExplainerPlugin, ModelAdapter, Sample

#: bump when a metric's definition changes, so cached trust results are recomputed
TRUST_VERSION = 3  # 2: sanity's similarity leaves out the pixels both maps leave at zero; 3: deletion by hand in the insertion's passes, default sanity size
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


@dataclass
class TrustSettings:
    """``sanity_samples`` / ``sanity_stages`` None: chosen by :func:`sanity_size` from the number of explained
    images, so that the check costs at most a third of its explainer."""

    steps: int = 12
    sanity_samples: int | None = None
    sanity_stages: int | None = None
    regions: list[str] | None = None


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


def cost(session: "TrustSession", sanity: bool = True) -> dict[str, Any]:
    """The model passes one explainer's trust step needs, in images through the model: deletion ``k`` and
    insertion ``k + 1`` forward passes per explained image, and the sanity check's re-explanations (each
    costs what the explainer spends on one image). Once per audit, the random order's curves cost the same
    as one explainer's deletion and insertion."""
    images = session.images
    n, _, height, width = images.shape
    k = _curve_steps(session.settings.steps, height * width)
    samples, stages = sanity_size(n, session.settings.sanity_samples, session.settings.sanity_stages)
    module = session.model.module
    layers = len(parameterised_layers(module)) if sanity and samples and module is not None else 0
    chosen = len(np.unique(np.linspace(0, n - 1, min(samples, n)).round().astype(int))) if layers else 0
    return {"curve_forward_images": n * (2 * k + 1), "random_order_forward_images": n * (2 * k + 1),
            "sanity_re_explanations": chosen * len(_stage_cuts(layers, stages)) if layers else 0}


@dataclass
class RandomReference:
    """Deletion / insertion of a random pixel order: the same for every explainer of an audit."""

    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    deletion_curve: np.ndarray
    insertion_curve: np.ndarray


@dataclass
class TrustSession:
    """What the trust metrics of one audit share: the model, the explained images, the random reference."""

    model: ModelAdapter
    samples: Sequence[Sample]
    targets: np.ndarray
    classes: list[str]
    seed: int
    settings: TrustSettings = field(default_factory=TrustSettings)
    class_regions: Mapping[str, Sequence[str]] = field(default_factory=dict)
    _random: RandomReference | None = None

    @property
    def images(self) -> np.ndarray:
        return np.stack([s.image for s in self.samples]).astype(np.float32)

    def random_reference(self) -> RandomReference:
        if self._random is None:
            maps = np.stack([_random_map(self.seed, s.id, s.image.shape[1:]) for s in self.samples])
            d_auc, i_auc, d_curve, i_curve = _deletion_insertion(self, maps)
            self._random = RandomReference(d_auc, i_auc, d_curve.mean(0), i_curve.mean(0))
        return self._random


# --------------------------------------------------------------------------- the whole assessment


def assess(session: TrustSession, plugin: ExplainerPlugin | None, maps: np.ndarray) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every trust metric for one explainer's maps: (results.json data, arrays for figures).

    ``plugin`` is re-run for the sanity check; None skips it.
    """
    runs_sanity = plugin is not None and session.settings.sanity_samples != 0 and session.model.module is not None
    data: dict[str, Any] = {"version": TRUST_VERSION, "model_passes": cost(session, runs_sanity)}
    arrays: dict[str, np.ndarray] = {}
    faith, curves = faithfulness(session, maps)
    data["faithfulness"] = faith
    arrays.update(curves)
    if runs_sanity:
        data["sanity"], sanity_maps = sanity(session, plugin, maps)
        arrays.update(sanity_maps)
    else:
        data["sanity"] = None
    data["localisation"] = localisation(session, maps)
    data["per_sample"] = _per_sample(session, faith, data["localisation"])
    data["verdict"] = verdict(data)
    return data, arrays


def verdict(trust: Mapping[str, Any]) -> dict[str, str]:
    """``{level, text}``: 'trusted', 'weak' or 'not trusted', with the reason in words."""
    sanity_result = trust.get("sanity")
    faith = trust.get("faithfulness") or {}
    note = ties_note(sanity_result) if sanity_result else ""  # where ties at zero would have changed the verdict
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


def faithfulness(session: TrustSession, maps: np.ndarray) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    d_auc, i_auc, d_curve, i_curve = _deletion_insertion(session, maps)
    ref = session.random_reference()
    score = i_auc - d_auc
    random_score = ref.insertion_auc - ref.deletion_auc
    data = {
        "steps": int(d_curve.shape[1] - 1),
        "deletion_auc": float(d_auc.mean()),
        "insertion_auc": float(i_auc.mean()),
        "random_deletion_auc": float(ref.deletion_auc.mean()),
        "random_insertion_auc": float(ref.insertion_auc.mean()),
        "score": float(score.mean()),
        "random_score": float(random_score.mean()),
        "beats_random_share": float(np.mean(score > random_score)),
        "deletion_auc_per_sample": d_auc.tolist(),
        "insertion_auc_per_sample": i_auc.tolist(),
        "deletion": "pixels set to black, most important first (as Quantus PixelFlipping)",
        "insertion": "pixels revealed over a blurred copy, most important first",
    }
    arrays = {
        "deletion_curve": d_curve.mean(0).astype(np.float32),
        "insertion_curve": i_curve.mean(0).astype(np.float32),
        "random_deletion_curve": ref.deletion_curve.astype(np.float32),
        "random_insertion_curve": ref.insertion_curve.astype(np.float32),
    }
    return data, arrays


def _deletion_insertion(session: TrustSession, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample deletion and insertion AUCs (N,) and curves (N, K + 1), x from 0 to all pixels."""
    images = session.images
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32))
    targets = np.asarray(session.targets, dtype=np.int64).reshape(-1)
    n, _, height, width = images.shape
    k = _curve_steps(session.settings.steps, height * width)
    batch = best_batch_size(session.model, images.shape[1:], backward=False)
    deletion, insertion = _curves(session.model, images, targets, maps, k, batch)  # (N, K + 1) each
    x = np.linspace(0.0, 1.0, k + 1)
    return _auc(deletion, x), _auc(insertion, x), deletion, insertion


def _curve_steps(requested: int, n_pixels: int) -> int:
    """The number of curve steps: 3·m with m dividing H·W, the m nearest below ``requested / 3`` (the
    steps Quantus' ``PixelFlipping`` takes when it removes ``3·H·W / k`` values a step, kept since)."""
    m = max(1, requested // 3)
    while m > 1 and n_pixels % m:
        m -= 1
    return 3 * m


def _curves(model: ModelAdapter, images: np.ndarray, targets: np.ndarray, maps: np.ndarray,
            k: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves (N, K + 1) each, in shared passes of ``batch`` images.

    Deletion sets pixels to black (0 in every channel) in the map's order, most important first, as Quantus
    ``PixelFlipping`` does with ``perturb_baseline=0``; insertion reveals the image over a blurred copy in the
    same order (Quantus has no insertion curve). Both are written here so that every canvas of both curves
    goes through the model in full passes at its best batch size: Quantus runs one pass per step over the
    images it is given (four images a pass for four explained images, where a pass of 32 costs about the
    same). Each curve starts from its first canvas: the whole image for deletion (the insertion's last
    canvas, not run twice), the blurred copy for insertion. The model sees ``2k + 1`` canvases per image.
    """
    import torch

    n, _, height, width = images.shape
    order = np.argsort(-maps.reshape(n, -1), axis=1, kind="stable")
    counts = np.round(np.linspace(0, height * width, k + 1)).astype(int)
    blurred = _blur(images)
    per_image = 2 * k + 1  # insertion 0..k (k: the whole image), deletion 1..k
    deletion, insertion = np.zeros((n, k + 1)), np.zeros((n, k + 1))
    group = max(1, batch // per_image)  # images whose canvases fit one pass
    forward = forward_in_best_layout(model, images.shape[1:], backward=False)
    for start in range(0, n, group):
        part = list(range(start, min(n, start + group)))
        canvases = []
        for i in part:
            rank = np.empty(height * width, dtype=np.int64)
            rank[order[i]] = np.arange(height * width)
            shown = rank.reshape(1, height, width) < counts[:, None, None]  # (K + 1, H, W): the top pixels
            canvases.append(np.where(shown[:, None], images[i], blurred[i]))
            canvases.append(np.where(shown[1:, None], 0.0, images[i]).astype(images.dtype))
        x = torch.as_tensor(np.concatenate(canvases), device=model.device)
        with torch.no_grad():
            probs = np.concatenate([torch.softmax(forward(x[chunk]), dim=1).cpu().numpy()
                                    for chunk in chunks(len(x), batch)])  # never one canvas alone in a pass
        probs = probs.reshape(len(part), per_image, -1)[np.arange(len(part)), :, targets[part]]
        insertion[part] = probs[:, : k + 1]
        deletion[part] = np.concatenate([probs[:, k : k + 1], probs[:, k + 1 :]], axis=1)
    return deletion, insertion


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


def sanity(session: TrustSession, plugin: ExplainerPlugin, maps: np.ndarray) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Cascading randomisation from the top layer down; Spearman of |maps| at each stage (by hand, see above)."""
    n = len(session.samples)
    count, n_stages = sanity_size(n, session.settings.sanity_samples, session.settings.sanity_stages)
    count = min(count, n)
    chosen = np.unique(np.linspace(0, n - 1, count).round().astype(int))
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
    """Per-sample Spearman rank correlation (Quantus's ``correlation_spearman``); 0 where a map is constant."""
    from quantus.functions.similarity_func import correlation_spearman

    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    constant = (np.ptp(a, axis=1) == 0) | (np.ptp(b, axis=1) == 0)
    rho = np.zeros(len(a), dtype=np.float64)
    keep = ~constant  # a constant map has no ranking (and makes Quantus 0.6 fail on scipy's bare float)
    if keep.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                rho[keep] = np.asarray(correlation_spearman(a[keep], b[keep], batched=True), np.float64).reshape(-1)
            except AttributeError:  # Quantus 0.6 expects an array where scipy returned a float: per row, by hand
                from scipy.stats import spearmanr

                rho[keep] = [spearmanr(x, y)[0] for x, y in zip(a[keep], b[keep])]
    return np.where(~np.isfinite(rho), 0.0, rho)


# --------------------------------------------------------------------------- helpers


def _per_sample(session: TrustSession, faith: Mapping[str, Any], loc: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    ref = session.random_reference()
    loc_index = {sid: i for i, sid in enumerate(loc["sample_ids"])} if loc else {}
    out = []
    for i, sample in enumerate(session.samples):
        d, ins = faith["deletion_auc_per_sample"][i], faith["insertion_auc_per_sample"][i]
        row: dict[str, Any] = {
            "id": sample.id,
            "deletion_auc": d,
            "insertion_auc": ins,
            "score": ins - d,
            "random_score": float(ref.insertion_auc[i] - ref.deletion_auc[i]),
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
