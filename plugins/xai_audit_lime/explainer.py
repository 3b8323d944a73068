"""LIME (the ``lime`` package): a local linear model over quickshift superpixels.

Each image is cut into superpixels; ``samples`` copies with random superpixels
replaced by their mean colour are scored by the model, and a weighted ridge
regression of the target probability on the on/off pattern gives each
superpixel a weight. The map paints each pixel with its superpixel's weight
(signed: positive superpixels support the class).

What is ours rather than lime's defaults, and why:

* segmentation: lime's default quickshift (kernel 4, max_dist 200) leaves a
  48x48 face in about four pieces, too few to say anything; the kernel size
  is chosen from the image so each image has at least ``min_segments`` parts
  (by default one per 150 pixels, between 20 and 80);
* batching: the classifier is called with the model's best batch size
  (lime's default is 10 images a call), the samples cut into passes of sizes
  that differ by at most one (never one image alone: an image's probabilities
  are then the same in any pass, so the batch size changes no number), and
  the perturbed images of a batch are built in one vectorised torch step
  instead of lime's per-image Python loop (same random on/off patterns, same
  images), as is the mean-colour image (one ``bincount`` per channel instead
  of a loop over superpixels);
* seeding: each image's random stream comes from the seed and its sample id,
  so an image gets the same explanation alone or in a batch.

Every class of an image (``classes: all``): the same perturbed images and
model passes, one more regression per class (lime's ``top_labels``), so the
map of the explained class is the same as without it. ``positive_only``
shows lime's "positive evidence only" view (``get_image_and_mask`` with
``positive_only=True, hide_rest=True``): the image with everything hidden
but the ``num_features`` superpixels that most support the class.

The random stream, distances, kernel, feature selection and regression are lime's own
(``LimeBase``); a test checks the explanation equals lime's ``explain_instance``.
Grayscale models need nothing special: LIME perturbs the display-space RGB
image, and the model adapter maps it to one channel.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np
from pydantic import Field

from xai_audit.api import (
    ExplainerPlugin,
    Explanation,
    ModelAdapter,
    ModelPasses,
    Options,
    Sample,
    batch_slices,
    best_batch_size,
    forward_in_best_layout,
    prefers_channels_last,
)

#: superpixels drawn per sign in the boundary figure
_SHOWN_SEGMENTS = 5
#: samples drawn in the boundary figure
_SHOWN_SAMPLES = 6
#: the first quickshift kernel aims at this many times the wanted superpixels
_FIRST_TRY_MARGIN = 1.4
#: images larger than this (pixels, shorter side) are segmented at a reduced resolution
_SEGMENT_SIDE = 112


class LimeOptions(Options):
    samples: int = Field(1000, ge=10, le=100_000, description="perturbed images per explanation (model passes)")
    min_segments: int | None = Field(
        None, ge=2, le=2000,
        description="choose quickshift settings for at least this many superpixels; default: one per 150 pixels, 20 to 80",
    )
    kernel_size: float | None = Field(None, gt=0, description="quickshift kernel size; default: chosen from the image")
    max_dist: float | None = Field(None, gt=0, description="quickshift max_dist; default: twice the kernel size")
    ratio: float = Field(0.2, ge=0.0, le=1.0, description="quickshift colour/space balance")
    kernel_width: float = Field(0.25, gt=0, description="lime's similarity kernel width")
    batch_size: int | None = Field(
        None, ge=1, description="images per model call (speed only: the maps do not change); default: automatic")
    classes: Literal["target", "all"] = Field(
        "target", description="explain the explained class only, or every class of each image (same model passes, "
        "one regression per class)")
    class_images: int = Field(1, ge=1, le=24, description="with classes: all, the images shown with a map per class")
    positive_only: bool = Field(
        False, description="also show lime's positive-evidence-only view: the image hidden but for the superpixels "
        "that most support the class")
    num_features: int = Field(5, ge=1, le=100, description="superpixels shown in the positive-evidence view")


class LimeExplainer(ExplainerPlugin):
    name = "lime"
    description = "LIME (lime package): a local linear model over quickshift superpixels."
    Options = LimeOptions
    needs_gradients = False

    def explain(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> Explanation:
        opts: LimeOptions = self.options
        maps, segments, scores, per_class = self._explain(model, samples, targets, seed)
        n_segments = np.array([len(np.unique(s)) for s in segments], dtype=np.float32)
        shown = min(len(samples), _SHOWN_SAMPLES)
        boundaries = np.stack([_draw_segments(samples[i].image, segments[i], maps[i]) for i in range(shown)])
        targets = np.asarray(targets).reshape(-1)
        views = _ClassViews(samples, targets, segments, per_class, list(model.classes), opts)
        return Explanation(
            method=self.name,
            sample_ids=[s.id for s in samples],
            targets=np.asarray(targets),
            maps=maps,
            signed=True,
            scalars={
                "superpixels_mean": float(n_segments.mean()),
                "superpixels_min": float(n_segments.min()),
                "local_fit_r2_mean": float(np.mean(scores)),
                **views.scalars(),
            },
            arrays={"segments": np.stack(segments).astype(np.int32), "local_fit_r2": np.asarray(scores, np.float32),
                    "boundaries": boundaries.astype(np.float32), **views.arrays},
            tables=views.tables(),
            figures=[{
                "kind": "images",
                "title": "LIME superpixels: green = supports the class, red = against",
                "images": {"array": "boundaries"},
                "titles": [f"{s.id}" for s in samples[:shown]],
                "columns": min(shown, 6),
                "caption": (
                    f"The {_SHOWN_SEGMENTS} superpixels with the largest positive weight outlined and tinted green, "
                    f"the {_SHOWN_SEGMENTS} most negative in red; other superpixel boundaries in grey."
                ),
                "alt": "Images with LIME's most positive superpixels outlined in green and most negative in red.",
            }, *views.figures],
            notes=[
                f"{self.options.samples} perturbed images per explanation; superpixels replaced by their mean colour. "
                "local_fit_r2 is the weighted R² of lime's linear model: low means the map is a poor local summary.",
                *views.notes(),
            ],
            run={"batch_size": int(self._batch(model, samples)), "layout": "channels-last" if prefers_channels_last(
                model, tuple(samples[0].image.shape), backward=False) else "standard"},
        )

    def explain_maps(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> np.ndarray:
        return self._explain(model, samples, targets, seed, every_class=False)[0]

    def model_passes(self, model: ModelAdapter, n: int, image_shape: tuple[int, ...],
                     maps_only: bool = False) -> ModelPasses:
        """``samples`` perturbed copies of every image forward (the first keeps every superpixel: the image)."""
        return ModelPasses(forward=n * self.options.samples)

    def _batch(self, model: ModelAdapter, samples: Sequence[Sample]) -> int:
        return self.options.batch_size or best_batch_size(model, tuple(samples[0].image.shape), backward=False)

    def _explain(
        self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int, every_class: bool = True,
    ) -> tuple[np.ndarray, list[np.ndarray], list[float], list[_PerClass]]:
        """Maps of the targets, superpixels, fit R², and (``classes: all``) every class's weights per image."""
        from xai_audit_lime.batched import BatchedLimeImageExplainer

        opts: LimeOptions = self.options
        batch = self._batch(model, samples)
        classify = _classifier(model, tuple(samples[0].image.shape))
        all_classes = every_class and opts.classes == "all"
        maps, segments, scores, per_class = [], [], [], []
        for sample, target in zip(samples, np.asarray(targets).reshape(-1)):
            sample_seed = _sample_seed(seed, sample.id)
            image = np.ascontiguousarray(sample.image.transpose(1, 2, 0), dtype=np.float32)
            seg = segment(image, opts, sample_seed)
            explainer = BatchedLimeImageExplainer(kernel_width=opts.kernel_width, random_state=sample_seed)
            result = explainer.explain_segments(image, seg, classify, int(target), opts.samples, batch,
                                                every_class=all_classes)
            n = int(seg.max()) + 1
            weights = _weights(result.local_exp[int(target)], n)
            maps.append(weights[seg])
            segments.append(seg)
            scores.append(float(result.score))
            per_class.append(_PerClass(
                probabilities=np.asarray(result.probabilities, np.float32),
                weights=np.stack([_weights(result.local_exp[k], n) for k in result.local_exp]),
                labels=list(result.local_exp),  # the explained class first, then the others in class order
                scores=[float(result.scores[k]) for k in result.local_exp],
            ))
        return np.stack(maps).astype(np.float32), segments, scores, per_class


def segment(image: np.ndarray, opts: LimeOptions, seed: int) -> np.ndarray:
    """Quickshift superpixels (H, W) labelled 0..n-1, at least ``opts.min_segments`` of them if it can.

    Quickshift gives about ``0.035 · (side / kernel_size)²`` superpixels on a face; the first kernel
    size tried is the one that predicts 1.4 times the wanted count (the count scatters around the
    prediction, and a second try costs a second quickshift), then smaller ones (finer, and cheaper:
    quickshift's cost grows with the kernel's area) until the count is reached.
    """
    from skimage.segmentation import quickshift, relabel_sequential

    wanted = opts.min_segments or int(np.clip(image.shape[0] * image.shape[1] / 150, 20, 80))
    full_size = image.shape[:2]
    step = int(np.ceil(min(full_size) / _SEGMENT_SIDE))
    if step > 1 and opts.kernel_size is None:
        # superpixels of a large image are hundreds of pixels each: find them at a lower resolution
        image = _shrink(image, step)
    side = min(image.shape[:2])
    if opts.kernel_size is not None:
        sizes = [opts.kernel_size]
    else:
        first = float(np.clip(side * np.sqrt(0.035 / (_FIRST_TRY_MARGIN * wanted)), 1.0, 8.0))
        sizes = sorted({round(max(1.0, first * 0.8**k), 2) for k in range(8)}, reverse=True)
    labels = None
    for kernel_size in sizes:
        max_dist = opts.max_dist or 2.0 * kernel_size
        labels = quickshift(image, kernel_size=kernel_size, max_dist=max_dist, ratio=opts.ratio, rng=seed)
        if len(np.unique(labels)) >= wanted:
            break
    assert labels is not None
    if labels.shape != full_size:
        rows = np.minimum(np.arange(full_size[0]) * labels.shape[0] // full_size[0], labels.shape[0] - 1)
        cols = np.minimum(np.arange(full_size[1]) * labels.shape[1] // full_size[1], labels.shape[1] - 1)
        labels = labels[np.ix_(rows, cols)]
    return relabel_sequential(labels)[0].astype(np.int64)


def _shrink(image: np.ndarray, step: int) -> np.ndarray:
    """Block means of ``step`` x ``step`` pixels (the edge rows and columns that do not fill a block dropped)."""
    h, w = (image.shape[0] // step) * step, (image.shape[1] // step) * step
    return image[:h, :w].reshape(h // step, step, w // step, step, -1).mean(axis=(1, 3))


def _classifier(model: ModelAdapter, image_shape: tuple[int, ...]) -> Callable[[Any], np.ndarray]:
    """Probabilities for a batch: a torch tensor (N, 3, H, W), or lime's numpy (N, H, W, 3); passed
    to the model in its faster memory layout."""
    import torch

    forward = forward_in_best_layout(model, image_shape, backward=False)

    def classify(images: Any) -> np.ndarray:
        if not isinstance(images, torch.Tensor):
            images = torch.as_tensor(np.asarray(images).transpose(0, 3, 1, 2))
        x = images.to(device=model.device, dtype=torch.float32)
        with torch.no_grad():
            return torch.softmax(forward(x), dim=1).cpu().numpy()

    return classify


def _sample_seed(seed: int, sample_id: str) -> int:
    digest = hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _draw_segments(image: np.ndarray, seg: np.ndarray, weights_map: np.ndarray) -> np.ndarray:
    """The image (3, H, W) with the strongest positive superpixels green, negative red."""
    from skimage.segmentation import find_boundaries

    rgb = image.transpose(1, 2, 0).astype(np.float32).copy()
    n = int(seg.max()) + 1
    weight = np.zeros(n, dtype=np.float32)
    weight[seg.ravel()] = weights_map.ravel()
    order = np.argsort(weight)
    positive = [k for k in order[::-1][:_SHOWN_SEGMENTS] if weight[k] > 0]
    negative = [k for k in order[:_SHOWN_SEGMENTS] if weight[k] < 0]
    grey = find_boundaries(seg, mode="inner")
    rgb[grey] = 0.6 * rgb[grey] + 0.4 * np.array([0.6, 0.6, 0.6], dtype=np.float32)
    for ks, colour in ((positive, (0.1, 0.75, 0.2)), (negative, (0.9, 0.1, 0.1))):
        if not ks:
            continue
        mask = np.isin(seg, ks)
        tint = np.array(colour, dtype=np.float32)
        rgb[mask] = 0.7 * rgb[mask] + 0.3 * tint
        edge = find_boundaries(np.where(mask, seg, -1), mode="inner") & mask
        rgb[edge] = tint
    return rgb.transpose(2, 0, 1)


def _weights(local_exp: Sequence[tuple[int, float]], n: int) -> np.ndarray:
    """lime's ``(superpixel, weight)`` pairs as a weight per superpixel (n,)."""
    weights = np.zeros(n, dtype=np.float32)
    for index, weight in local_exp:
        weights[index] = weight
    return weights


@dataclass
class _PerClass:
    """One image's lime fit for each class it was explained for."""

    probabilities: np.ndarray  # (K,) the model's probabilities of the image
    weights: np.ndarray  # (len(labels), n superpixels)
    labels: list[int]
    scores: list[float]  # lime's weighted R² per class


def positive_evidence(image: np.ndarray, seg: np.ndarray, weights: np.ndarray, num_features: int) -> np.ndarray:
    """lime's ``get_image_and_mask(label, positive_only=True, hide_rest=True, num_features)``: the image (3, H, W)
    with every pixel hidden (grey) but those of the ``num_features`` largest positively weighted superpixels."""
    order = np.argsort(-weights, kind="stable")[:num_features]
    keep = [int(k) for k in order if weights[k] > 0]
    mask = np.isin(seg, keep)
    return np.where(mask[None], image, np.float32(0.5)).astype(np.float32)


class _ClassViews:
    """What ``classes: all`` and ``positive_only`` add to the explanation: a table, arrays, figures."""

    def __init__(self, samples: Sequence[Sample], targets: np.ndarray, segments: list[np.ndarray],
                 per_class: list[_PerClass], classes: list[str], opts: LimeOptions):
        self.samples, self.targets, self.segments, self.per_class = samples, targets, segments, per_class
        self.classes, self.opts = classes, opts
        self.arrays: dict[str, np.ndarray] = {}
        self.figures: list[dict[str, Any]] = []
        if opts.classes == "all":
            self._every_class()
        if opts.positive_only:
            self._positive()

    def _name(self, k: int) -> str:
        return self.classes[k] if 0 <= k < len(self.classes) else f"class {k}"

    def _every_class(self) -> None:
        for i in range(min(self.opts.class_images, len(self.samples))):
            found, seg = self.per_class[i], self.segments[i]
            self.arrays[f"class_maps_{i}"] = found.weights[:, seg].astype(np.float32)  # (K, H, W)
            self.arrays[f"class_image_{i}"] = np.asarray(self.samples[i].image, np.float32)
            self.figures.append({
                "kind": "heatmaps",
                "title": f"{self.samples[i].id}: LIME for every class",
                "maps": {"array": f"class_maps_{i}"}, "image": {"array": f"class_image_{i}"},
                "titles": [f"{self._name(k)} (p = {found.probabilities[k]:.2f})" for k in found.labels],
                "signed": True, "columns": min(len(found.labels), 7), "colorbar": "LIME weight",
                "caption": ("One LIME map per class on the same perturbed images, on one colour scale: what supports "
                            "(positive) and what speaks against (negative) each class. The first map is the "
                            "explained class."),
                "alt": f"LIME maps of image {self.samples[i].id} for each class.",
            })

    def _positive(self) -> None:
        tiles, titles = [], []
        if self.opts.classes == "all":
            which = [(i, j) for i in range(min(self.opts.class_images, len(self.samples)))
                     for j in range(len(self.per_class[i].labels))]
        else:
            which = [(i, 0) for i in range(min(len(self.samples), _SHOWN_SAMPLES))]
        for i, j in which:
            found = self.per_class[i]
            tiles.append(positive_evidence(np.asarray(self.samples[i].image, np.float32), self.segments[i],
                                           found.weights[j], self.opts.num_features))
            titles.append(f"{self.samples[i].id}: {self._name(found.labels[j])}")
        self.arrays["positive_evidence"] = np.stack(tiles)
        self.figures.append({
            "kind": "images", "title": "LIME, positive evidence only",
            "images": {"array": "positive_evidence"}, "titles": titles,
            "columns": min(len(tiles), 7),
            "caption": (f"Each image hidden but for the (at most) {self.opts.num_features} superpixels that most "
                        "support the class named (lime's positive_only view); grey: hidden."),
            "alt": "Images with only the superpixels that support a class left visible.",
        })

    def scalars(self) -> dict[str, float]:
        if self.opts.classes != "all":
            return {}
        return {"classes explained per image": float(len(self.per_class[0].labels)) if self.per_class else 0.0}

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        if self.opts.classes != "all":
            return {}
        rows = []
        for sample, target, found in zip(self.samples, self.targets, self.per_class):
            for j, k in enumerate(found.labels):
                w = found.weights[j]
                rows.append({
                    "sample": sample.id, "class": self._name(k), "explained class": bool(k == int(target)),
                    "probability": float(found.probabilities[k]),
                    "positive weight": float(w[w > 0].sum()), "negative weight": float(w[w < 0].sum()),
                    "superpixels for": int((w > 0).sum()), "local_fit_r2": float(found.scores[j]),
                })
        return {"classes": rows}

    def notes(self) -> list[str]:
        out = []
        if self.opts.classes == "all":
            out.append("classes: all: every class of each image explained on the same perturbed images (one "
                       "regression per class); the table 'classes' lists each class's total positive and negative "
                       "weight and fit.")
        if self.opts.positive_only:
            out.append(f"positive_only: the positive-evidence view keeps the {self.opts.num_features} superpixels "
                       "with the largest positive weight (fewer where fewer are positive).")
        return out
