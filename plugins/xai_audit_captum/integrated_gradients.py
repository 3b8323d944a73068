"""Integrated Gradients (captum), attributing in display space.

Maps are the attribution summed over colour channels: positive pixels push
the score of the target class up, negative ones down.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
from pydantic import Field

from xai_audit.types import Explanation, ExplainerPlugin, ModelAdapter, Options, Sample

#: elements (inputs × integration steps) per forward pass when chosen automatically
_AUTO_ELEMENTS = 2**25


class IntegratedGradientsOptions(Options):
    steps: int = Field(50, ge=2, le=1000, description="integration steps (model passes per image)")
    baseline: Literal["black", "blurred", "uniform"] = "black"
    method: Literal["gausslegendre", "riemann_trapezoid"] = "gausslegendre"
    internal_batch_size: int | None = Field(None, ge=1, description="steps per forward pass; default: automatic")


class IntegratedGradientsExplainer(ExplainerPlugin):
    name = "integrated-gradients"
    description = "Integrated Gradients (captum): path integral of gradients from a baseline image."
    Options = IntegratedGradientsOptions
    needs_gradients = True

    def explain(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> Explanation:
        from captum.attr import IntegratedGradients

        opts: IntegratedGradientsOptions = self.options
        images = torch.as_tensor(np.stack([s.image for s in samples]), dtype=torch.float32, device=model.device)
        target = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=model.device)
        baselines = _baseline(images, opts.baseline, seed)
        per_pass = opts.internal_batch_size or max(1, _AUTO_ELEMENTS // int(np.prod(images.shape[1:])))
        ig = IntegratedGradients(model.forward)
        attributions = []
        deltas = []
        # one image at a time keeps memory flat; its steps are batched by internal_batch_size
        for i in range(len(images)):
            attr, delta = ig.attribute(
                images[i : i + 1],
                baselines=baselines[i : i + 1],
                target=target[i : i + 1],
                n_steps=opts.steps,
                method=opts.method,
                internal_batch_size=min(per_pass, opts.steps),
                return_convergence_delta=True,
            )
            attributions.append(attr.detach().cpu())
            deltas.append(delta.detach().cpu())
        attr_all = torch.cat(attributions)  # (N, 3, H, W)
        delta_all = torch.cat(deltas).abs().numpy()
        maps = attr_all.sum(dim=1).numpy().astype(np.float32)  # (N, H, W)
        return Explanation(
            method=self.name,
            sample_ids=[s.id for s in samples],
            targets=np.asarray(targets),
            maps=maps,
            signed=True,
            scalars={
                "convergence_delta_mean": float(delta_all.mean()) if len(delta_all) else 0.0,
                "convergence_delta_max": float(delta_all.max()) if len(delta_all) else 0.0,
            },
            arrays={"convergence_delta": delta_all.astype(np.float32)},
            notes=[
                f"{opts.steps} steps ({opts.method}) from a {opts.baseline} baseline; "
                "the convergence delta is |sum of attributions - (score(image) - score(baseline))|."
            ],
        )


def _baseline(images: torch.Tensor, kind: str, seed: int) -> torch.Tensor:
    if kind == "black":
        return torch.zeros_like(images)
    if kind == "uniform":
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(images.shape, generator=generator).to(images.device)
    # blurred: a strong box blur keeps colours but removes shape
    k = max(3, (images.shape[-1] // 8) | 1)
    return torch.nn.functional.avg_pool2d(images, kernel_size=k, stride=1, padding=k // 2, count_include_pad=False)
