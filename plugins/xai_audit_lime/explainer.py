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

The random stream, distances, kernel, feature selection and regression are lime's own
(``LimeBase``); a test checks the explanation equals lime's ``explain_instance``.
Grayscale models need nothing special: LIME perturbs the display-space RGB
image, and the model adapter maps it to one channel.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

import numpy as np
from pydantic import Field

from xai_audit.api import (
    ExplainerPlugin,
    Explanation,
    ModelAdapter,
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


class LimeExplainer(ExplainerPlugin):
    name = "lime"
    description = "LIME (lime package): a local linear model over quickshift superpixels."
    Options = LimeOptions
    needs_gradients = False

    def explain(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> Explanation:
        maps, segments, scores = self._explain(model, samples, targets, seed)
        n_segments = np.array([len(np.unique(s)) for s in segments], dtype=np.float32)
        shown = min(len(samples), _SHOWN_SAMPLES)
        boundaries = np.stack([_draw_segments(samples[i].image, segments[i], maps[i]) for i in range(shown)])
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
            },
            arrays={"segments": np.stack(segments).astype(np.int32), "local_fit_r2": np.asarray(scores, np.float32),
                    "boundaries": boundaries.astype(np.float32)},
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
            }],
            notes=[
                f"{self.options.samples} perturbed images per explanation; superpixels replaced by their mean colour. "
                "local_fit_r2 is the weighted R² of lime's linear model: low means the map is a poor local summary."
            ],
            run={"batch_size": int(self._batch(model, samples)), "layout": "channels-last" if prefers_channels_last(
                model, tuple(samples[0].image.shape), backward=False) else "standard"},
        )

    def explain_maps(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> np.ndarray:
        return self._explain(model, samples, targets, seed)[0]

    def _batch(self, model: ModelAdapter, samples: Sequence[Sample]) -> int:
        return self.options.batch_size or best_batch_size(model, tuple(samples[0].image.shape), backward=False)

    def _explain(
        self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int
    ) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
        opts: LimeOptions = self.options
        batch = self._batch(model, samples)
        classify = _classifier(model, tuple(samples[0].image.shape))
        maps, segments, scores = [], [], []
        for sample, target in zip(samples, np.asarray(targets).reshape(-1)):
            sample_seed = _sample_seed(seed, sample.id)
            image = np.ascontiguousarray(sample.image.transpose(1, 2, 0), dtype=np.float32)
            seg = segment(image, opts, sample_seed)
            explainer = _BatchedLimeImageExplainer(kernel_width=opts.kernel_width, random_state=sample_seed)
            result = explainer.explain_segments(image, seg, classify, int(target), opts.samples, batch)
            weights = np.zeros(int(seg.max()) + 1, dtype=np.float32)
            for index, weight in result.local_exp[int(target)]:
                weights[index] = weight
            maps.append(weights[seg])
            segments.append(seg)
            scores.append(float(result.score))
        return np.stack(maps).astype(np.float32), segments, scores


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


def _lime_base() -> type:
    from lime.lime_image import LimeImageExplainer

    return LimeImageExplainer


class _BatchedLimeImageExplainer(_lime_base()):  # type: ignore[misc]
    """lime's image explainer with its neighbourhood built a batch at a time, in torch."""

    def explain_segments(self, image: np.ndarray, segments: np.ndarray, classifier_fn: Callable[[Any], np.ndarray],
                         label: int, num_samples: int, batch_size: int) -> Any:
        """lime's ``explain_instance`` for one label over given superpixels, with its random stream,
        distances, kernel, feature selection and regression (``LimeBase``), minus its per-superpixel
        Python loop for the mean-colour image (one ``bincount`` here)."""
        import sklearn.metrics
        from lime.lime_image import ImageExplanation

        self.random_state.randint(0, high=1000)  # lime draws a segmentation seed first: keep the stream
        n = int(segments.max()) + 1
        counts = np.bincount(segments.ravel(), minlength=n)
        means = np.stack([np.bincount(segments.ravel(), weights=image[..., c].ravel(), minlength=n)
                          for c in range(image.shape[-1])], axis=1) / np.maximum(counts, 1)[:, None]
        fudged = means[segments].astype(image.dtype)
        data, labels = self.data_labels(image, fudged, segments, classifier_fn, num_samples, batch_size=batch_size)
        distances = sklearn.metrics.pairwise_distances(data, data[0].reshape(1, -1), metric="cosine").ravel()
        result = ImageExplanation(image, segments)
        (result.intercept[label], result.local_exp[label], result.score, result.local_pred) = (
            self.base.explain_instance_with_data(data, labels, distances, label, n,
                                                 feature_selection=self.feature_selection))
        return result

    def data_labels(self, image: np.ndarray, fudged_image: np.ndarray, segments: np.ndarray,
                    classifier_fn: Callable[[Any], np.ndarray], num_samples: int,
                    batch_size: int = 10, **_: Any) -> tuple[np.ndarray, np.ndarray]:
        import torch

        n_features = np.unique(segments).shape[0]
        # the same draws as lime's own data_labels
        data = self.random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
        data[0, :] = 1
        height, width, channels = image.shape
        # a perturbed image is fudged + on * (image - fudged), pixel by pixel: one fused operation per batch
        # over (pixels, channels) tables, stored channels-last (1.5x faster than gathering rows of a
        # two-row-per-pixel table, 2.5x faster than torch.where; a kept pixel may differ in its last bit)
        fudged_t = torch.as_tensor(np.asarray(fudged_image, dtype=np.float32).reshape(-1, channels))
        offset = torch.as_tensor(np.asarray(image, dtype=np.float32).reshape(-1, channels)) - fudged_t
        seg = torch.as_tensor(segments.ravel())
        labels = []
        for part in batch_slices(num_samples, batch_size):  # never one image alone in a pass
            on = torch.as_tensor(data[part], dtype=torch.float32).index_select(1, seg)
            x = torch.addcmul(fudged_t, offset, on.unsqueeze(-1))  # (b, H*W, C)
            labels.append(classifier_fn(x.view(len(on), height, width, channels).permute(0, 3, 1, 2)))
        return data, np.concatenate(labels)


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
