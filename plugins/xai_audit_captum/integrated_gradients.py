"""Integrated Gradients (captum), attributing in display space.

Maps are the attribution summed over colour channels: positive pixels push
the score of the target class up, negative ones down.

The integration rule (points and weights) is captum's
(``approximation_parameters``). The gradients at every (image, step) point are
computed in passes of ``internal_batch_size`` points, several images' steps
sharing a pass (by default the model's best batch size for forward + backward,
:func:`xai_audit.contract.batching.best_batch_size`), and each image's weighted
gradients are summed in step order: a point's gradient is the same in any pass
of two or more points, so the maps and the convergence delta do not depend on
the batch size, which says only how fast they came. Images go to the model
channels-last where the layout rule says so (CNNs on a CPU).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from pydantic import Field, model_validator

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
    prefers_channels_last,
)
from xai_audit_captum._common import images_tensor, targets_tensor


class IntegratedGradientsOptions(Options):
    steps: int = Field(50, ge=2, le=1000, description="integration steps (model passes per image)")
    baseline: Literal["black", "blurred", "uniform", "image"] = Field(
        "black", description="black, blurred copy, uniform noise, or 'image' (see baseline_image)"
    )
    baseline_image: str | None = Field(None, description="image file for baseline 'image' (resized to each sample)")
    method: Literal["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"] = (
        "gausslegendre"
    )
    internal_batch_size: int | None = Field(
        None, ge=1, description="integration points per forward pass (speed only: the maps do not change); default: automatic")

    @model_validator(mode="after")
    def _image_baseline(self) -> "IntegratedGradientsOptions":
        if (self.baseline == "image") != (self.baseline_image is not None):
            raise ValueError("baseline 'image' and baseline_image go together")
        return self


class IntegratedGradientsExplainer(ExplainerPlugin):
    name = "integrated-gradients"
    description = "Integrated Gradients (captum): path integral of gradients from a baseline image."
    Options = IntegratedGradientsOptions
    needs_gradients = True

    def explain(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> Explanation:
        opts: IntegratedGradientsOptions = self.options
        images = images_tensor(samples, model.device)
        attributions, deltas, batching = self._attribute(
            model, images, targets_tensor(targets, model.device), seed, [s.id for s in samples])
        maps = attributions.sum(dim=1).numpy().astype(np.float32)  # (N, H, W)
        return Explanation(
            method=self.name,
            sample_ids=[s.id for s in samples],
            targets=np.asarray(targets),
            maps=maps,
            signed=True,
            scalars={
                "convergence_delta_mean": float(deltas.mean()) if len(deltas) else 0.0,
                "convergence_delta_max": float(deltas.max()) if len(deltas) else 0.0,
            },
            arrays={"convergence_delta": deltas.astype(np.float32)},
            notes=[
                f"{opts.steps} steps ({opts.method}) from a {opts.baseline} baseline, each image's gradients "
                "summed in step order; the convergence delta is "
                "|sum of attributions - (score(image) - score(baseline))|, small is good."
            ],
            run=batching,
        )

    def model_passes(self, model: ModelAdapter, n: int, image_shape: tuple[int, ...],
                     maps_only: bool = False) -> ModelPasses:
        """Every step of every image forward and backward, and the image and its baseline forward (the
        convergence delta, which ``explain_maps`` computes too)."""
        return ModelPasses(forward=2 * n, backward=n * self.options.steps)

    def explain_maps(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> np.ndarray:
        images = images_tensor(samples, model.device)
        attributions, _, _ = self._attribute(
            model, images, targets_tensor(targets, model.device), seed, [s.id for s in samples])
        return attributions.sum(dim=1).numpy().astype(np.float32)

    def _attribute(
        self, model: ModelAdapter, images: torch.Tensor, target: torch.Tensor, seed: int, ids: list[str]
    ) -> tuple[torch.Tensor, np.ndarray, dict[str, Any]]:
        """attributions (N, 3, H, W) on the CPU, |convergence delta| (N,), and how the passes were cut.

        The (image, step) points are taken image by image, step by step, and cut into passes of at most
        ``per_pass`` points (:func:`batch_slices`: never one point alone); once an image's every step has its
        gradient, the gradients times their step sizes are summed over the steps in one reduction, whatever
        passes they came in."""
        from captum.attr._utils.approximation_methods import approximation_parameters

        opts: IntegratedGradientsOptions = self.options
        shape = tuple(images.shape[1:])
        images = in_best_layout(model, images, backward=True)
        baselines = make_baseline(images, opts.baseline, seed, opts.baseline_image, ids)
        per_pass = opts.internal_batch_size or best_batch_size(model, shape, backward=True)
        step_sizes_of, alphas_of = approximation_parameters(opts.method)
        step_sizes, alphas = step_sizes_of(opts.steps), alphas_of(opts.steps)
        alpha = torch.tensor(alphas, dtype=images.dtype, device=images.device)
        forward = forward_in_best_layout(model, shape, backward=True)
        n, steps = len(images), opts.steps
        weights = torch.tensor(step_sizes, dtype=images.dtype, device=images.device).view(-1, *[1] * len(shape))
        total = torch.zeros_like(images)
        pending: dict[int, torch.Tensor] = {}  # an image's gradients at its steps, until it has them all
        passes = batch_slices(n * steps, per_pass)
        for part in passes:
            points = torch.arange(part.start, part.stop, device=images.device)
            which, k = points // steps, points % steps
            start, end = baselines[which], images[which]
            x = (start + alpha[k].view(-1, 1, 1, 1) * (end - start)).detach().requires_grad_(True)
            score = forward(x).gather(1, target[which].view(-1, 1)).sum()
            grads = torch.autograd.grad(score, x)[0].detach()
            for i in dict.fromkeys(which.tolist()):  # the images of this pass, each a run of its steps
                rows = (which == i).nonzero()[:, 0]
                first, last = int(rows[0]), int(rows[-1]) + 1
                buffer = pending.setdefault(i, torch.empty((steps, *shape), dtype=grads.dtype, device=grads.device))
                buffer[int(k[first]): int(k[last - 1]) + 1] = grads[first:last]
                if int(k[last - 1]) == steps - 1:  # its last step: one reduction over all of them
                    total[i] = (pending.pop(i) * weights).sum(dim=0)
        attributions = (total * (images - baselines)).detach()
        with torch.no_grad():  # the convergence delta: the scores of every image and its baseline, in passes of 2+
            both = torch.cat([images, baselines])
            scores = torch.cat([forward(both[p]).gather(1, target.repeat(2)[p].view(-1, 1))[:, 0]
                                for p in batch_slices(2 * n, per_pass)])
            deltas = attributions.reshape(n, -1).sum(dim=1) - (scores[:n] - scores[n:])
        layout = "channels-last" if prefers_channels_last(model, shape, backward=True) else "standard"
        batching = {"points_per_pass": int(per_pass), "passes": len(passes), "layout": layout}
        return attributions.cpu(), deltas.abs().cpu().numpy(), batching


def make_baseline(images: torch.Tensor, kind: str, seed: int, image_path: str | None = None,
                  ids: Sequence[str] | None = None) -> torch.Tensor:
    """The IG start point for each image (N, 3, H, W). Noise is seeded by the seed and each sample's
    id, so an image gets the same baseline alone or in a batch."""
    if kind == "black":
        return torch.zeros_like(images)
    if kind == "uniform":
        ids = list(ids) if ids is not None else [str(i) for i in range(len(images))]
        noise = [torch.rand(images.shape[1:], generator=torch.Generator().manual_seed(_seed_for(seed, sid)))
                 for sid in ids]
        return torch.stack(noise).to(images.device)
    if kind == "image":
        return _image_baseline(Path(image_path or ""), images)
    # blurred: a strong box blur keeps colours but removes shape
    k = max(3, (images.shape[-1] // 8) | 1)
    return torch.nn.functional.avg_pool2d(images, kernel_size=k, stride=1, padding=k // 2, count_include_pad=False)


def _seed_for(seed: int, sample_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()[:8], "little") & (2**63 - 1)


def _image_baseline(path: Path, images: torch.Tensor) -> torch.Tensor:
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"baseline_image {path} not found")
    height, width = images.shape[-2:]
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB").resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0
    base = torch.as_tensor(rgb.transpose(2, 0, 1), device=images.device)
    return base.unsqueeze(0).expand_as(images).contiguous()
