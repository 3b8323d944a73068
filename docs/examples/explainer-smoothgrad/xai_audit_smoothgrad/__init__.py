"""smoothgrad: SmoothGrad (Smilkov et al., 2017), |gradient| averaged over noisy copies of each image.

    explainers:
      - smoothgrad: {n: 16, noise: 0.15}

Each image's noise is drawn from the audit's seed and the sample's id alone, so
its map is the same whichever images it is explained with (batch independence)
and in every run with the same seed (determinism).
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
import torch
from pydantic import Field

from xai_audit.api import (
    ExplainerPlugin,
    Explanation,
    ModelAdapter,
    Options,
    Sample,
    array_ref,
    batch_slices,
    best_batch_size,
    hookimpl,
)


class SmoothGradOptions(Options):
    n: int = Field(16, ge=1, le=1024, description="noisy copies of each image")
    noise: float = Field(0.15, gt=0, le=1, description="standard deviation of the noise (pixels are in [0, 1])")
    batch_size: int | None = Field(None, ge=1, description="copies per pass; default: the model's best batch size")


class SmoothGradExplainer(ExplainerPlugin):
    name = "smoothgrad"
    description = "SmoothGrad: |gradient| of the target score, averaged over noisy copies of the image."
    Options = SmoothGradOptions
    needs_gradients = True  # refused at plan validation for a black-box model

    def explain(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> Explanation:
        maps = self.explain_maps(model, samples, targets, seed)
        opts: SmoothGradOptions = self.options
        return Explanation(
            method=self.name,
            sample_ids=[s.id for s in samples],
            targets=np.asarray(targets),
            maps=maps,  # (N, H, W), one per sample, in display space
            signed=False,
            scalars={"copies": float(opts.n), "noise": opts.noise},
            arrays={"mean_map": maps.mean(axis=0, keepdims=True)},
            figures=[{
                "kind": "heatmaps",
                "title": "Mean SmoothGrad map",
                "maps": array_ref("mean_map"),
                "caption": f"The mean of the {len(maps)} explained images' maps: where the model looks on average.",
                "alt": "One heatmap: the SmoothGrad maps of the explained images, averaged.",
            }],
            notes=[f"mean |gradient| over {opts.n} noisy copies (sd {opts.noise:g}), maximum over colour channels"],
        )

    def explain_maps(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray,
                     seed: int) -> np.ndarray:
        opts: SmoothGradOptions = self.options
        maps = []
        for sample, target in zip(samples, np.asarray(targets).reshape(-1)):
            image = np.asarray(sample.image, dtype=np.float32)  # (3, H, W) in [0, 1]
            rng = np.random.default_rng([seed, zlib.crc32(sample.id.encode())])  # this sample's own noise
            noisy = image[None] + rng.normal(0.0, opts.noise, size=(opts.n, *image.shape)).astype(np.float32)
            copies = torch.as_tensor(noisy, device=model.device)
            size = opts.batch_size or best_batch_size(model, tuple(image.shape), backward=True)
            per_copy = []  # summed once at the end: the batch size groups passes, and changes no number
            for part in batch_slices(opts.n, size):
                x = copies[part].clone().requires_grad_(True)
                score = model.forward(x)[:, int(target)].sum()
                (grad,) = torch.autograd.grad(score, x)
                per_copy.append(grad.abs().amax(dim=1).cpu())
            maps.append((torch.cat(per_copy).sum(dim=0) / opts.n).numpy())
        return np.stack(maps).astype(np.float32)


@hookimpl
def register_explainers() -> list[type[ExplainerPlugin]]:
    return [SmoothGradExplainer]
