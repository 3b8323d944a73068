"""lime's image explainer with its neighbourhood built a batch at a time (the LIME plugin's engine).

Its own module so that importing the plugin (every ``xai-audit`` command discovers it) does not import lime,
scikit-learn and scikit-image: :mod:`xai_audit_lime.explainer` imports this module when it explains.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import sklearn.metrics
import torch
from lime.lime_image import ImageExplanation, LimeImageExplainer

from xai_audit.api import batch_slices


class BatchedLimeImageExplainer(LimeImageExplainer):  # type: ignore[misc]
    """lime's image explainer with its neighbourhood built a batch at a time, in torch."""

    def explain_segments(self, image: np.ndarray, segments: np.ndarray, classifier_fn: Callable[[Any], np.ndarray],
                         label: int, num_samples: int, batch_size: int, every_class: bool = False) -> Any:
        """lime's ``explain_instance`` for one label (or, ``every_class``, for ``label`` and every other
        class on the same perturbed images, as lime's ``top_labels`` does) over given superpixels, with its
        random stream, distances, kernel, feature selection and regression (``LimeBase``), minus its
        per-superpixel Python loop for the mean-colour image (one ``bincount`` here)."""
        self.random_state.randint(0, high=1000)  # lime draws a segmentation seed first: keep the stream
        n = int(segments.max()) + 1
        counts = np.bincount(segments.ravel(), minlength=n)
        means = np.stack([np.bincount(segments.ravel(), weights=image[..., c].ravel(), minlength=n)
                          for c in range(image.shape[-1])], axis=1) / np.maximum(counts, 1)[:, None]
        fudged = means[segments].astype(image.dtype)
        data, labels = self.data_labels(image, fudged, segments, classifier_fn, num_samples, batch_size=batch_size)
        distances = sklearn.metrics.pairwise_distances(data, data[0].reshape(1, -1), metric="cosine").ravel()
        result = ImageExplanation(image, segments)
        result.probabilities = labels[0]  # data[0] keeps every superpixel: the image itself
        result.scores = {}
        for k in [label] + ([j for j in range(labels.shape[1]) if j != label] if every_class else []):
            (result.intercept[k], result.local_exp[k], result.scores[k], local_pred) = (
                self.base.explain_instance_with_data(data, labels, distances, k, n,
                                                     feature_selection=self.feature_selection))
            if k == label:
                result.score, result.local_pred = result.scores[k], local_pred
        return result

    def data_labels(self, image: np.ndarray, fudged_image: np.ndarray, segments: np.ndarray,
                    classifier_fn: Callable[[Any], np.ndarray], num_samples: int,
                    batch_size: int = 10, **_: Any) -> tuple[np.ndarray, np.ndarray]:
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
