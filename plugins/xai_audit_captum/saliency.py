"""Saliency (captum): the gradient of the target score with respect to the pixels.

The map is the gradient's magnitude, largest over the colour channels
(Simonyan et al., 2014): unsigned, one forward and one backward pass per image.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
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
    in_best_layout,
)
from xai_audit_captum._common import images_tensor, targets_tensor


class SaliencyOptions(Options):
    batch_size: int | None = Field(None, ge=1, description="images per pass; default: automatic")


class SaliencyExplainer(ExplainerPlugin):
    name = "saliency"
    description = "Saliency (captum): magnitude of the score's gradient with respect to each pixel."
    Options = SaliencyOptions
    needs_gradients = True

    def explain(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> Explanation:
        maps = self.explain_maps(model, samples, targets, seed)
        return Explanation(
            method=self.name,
            sample_ids=[s.id for s in samples],
            targets=np.asarray(targets),
            maps=maps,
            signed=False,
            notes=["|gradient of the target logit|, maximum over the colour channels."],
            run={"batch_size": int(self.options.batch_size
                                   or best_batch_size(model, tuple(samples[0].image.shape), backward=True))},
        )

    def model_passes(self, model: ModelAdapter, n: int, image_shape: tuple[int, ...],
                     maps_only: bool = False) -> ModelPasses:
        """One forward and backward pass an image."""
        return ModelPasses(backward=n)

    def explain_maps(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> np.ndarray:
        from captum.attr import Saliency

        images = in_best_layout(model, images_tensor(samples, model.device), backward=True)
        target = targets_tensor(targets, model.device)
        size = self.options.batch_size or best_batch_size(model, tuple(images.shape[1:]), backward=True)
        saliency = Saliency(forward_in_best_layout(model, tuple(images.shape[1:]), backward=True))
        out = []
        for part in batch_slices(len(images), size):
            grads = saliency.attribute(images[part].clone().requires_grad_(True), target=target[part], abs=True)
            out.append(grads.detach().amax(dim=1).cpu())
        return torch.cat(out).numpy().astype(np.float32)
