"""Integrated Gradients (captum), attributing in display space.

Maps are the attribution summed over colour channels: positive pixels push
the score of the target class up, negative ones down.

Batching (captum's ``internal_batch_size``: integration points per forward
pass): at most the model's best batch size for forward + backward, capped by
free memory (:func:`xai_audit.contract.batching.best_batch_size`); several images share
a pass when that takes fewer passes (:func:`pass_plan`). Images are passed to
the model channels-last when it runs faster that way (CNNs on a CPU).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from pydantic import Field, model_validator

from xai_audit.api import (
    ExplainerPlugin,
    Explanation,
    ModelAdapter,
    Options,
    Sample,
    best_batch_size,
    forward_in_best_layout,
    in_best_layout,
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
    internal_batch_size: int | None = Field(None, ge=1, description="steps per forward pass; default: automatic")

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
        attributions, deltas, (group, points, limit) = self._attribute(
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
                "images_per_pass": float(group),
                "internal_batch_size": float(group * points),
            },
            arrays={"convergence_delta": deltas.astype(np.float32)},
            notes=[
                f"{opts.steps} steps ({opts.method}) from a {opts.baseline} baseline, "
                f"model passes of up to {limit} integration points (several images' steps sharing one when "
                "that takes fewer passes); the convergence delta is "
                "|sum of attributions - (score(image) - score(baseline))|, small is good."
            ],
        )

    def explain_maps(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> np.ndarray:
        images = images_tensor(samples, model.device)
        attributions, _, _ = self._attribute(
            model, images, targets_tensor(targets, model.device), seed, [s.id for s in samples])
        return attributions.sum(dim=1).numpy().astype(np.float32)

    def _attribute(
        self, model: ModelAdapter, images: torch.Tensor, target: torch.Tensor, seed: int, ids: list[str]
    ) -> tuple[torch.Tensor, np.ndarray, tuple[int, int, int]]:
        """attributions (N, 3, H, W) on the CPU, |convergence delta| (N,), and the batching: images per
        pass, steps of each per pass, and the most points a pass may hold."""
        from captum.attr import IntegratedGradients

        opts: IntegratedGradientsOptions = self.options
        images = in_best_layout(model, images, backward=True)
        baselines = make_baseline(images, opts.baseline, seed, opts.baseline_image, ids)
        per_pass = opts.internal_batch_size or best_batch_size(model, tuple(images.shape[1:]), backward=True)
        group, points = pass_plan(len(images), opts.steps, per_pass)
        ig = IntegratedGradients(forward_in_best_layout(model, tuple(images.shape[1:]), backward=True))
        attributions, deltas = [], []
        for start in range(0, len(images), group):
            part = slice(start, start + group)
            n = len(images[part])
            attr, delta = ig.attribute(
                images[part],
                baselines=baselines[part],
                target=target[part],
                n_steps=opts.steps,
                method=opts.method,
                internal_batch_size=n * points,
                return_convergence_delta=True,
            )
            attributions.append(attr.detach().cpu())
            deltas.append(delta.detach().abs().cpu())
        return torch.cat(attributions), torch.cat(deltas).numpy(), (min(len(images), group), points, per_pass)


def pass_plan(n_images: int, steps: int, per_pass: int) -> tuple[int, int]:
    """(images per captum call, integration steps of each image per pass): the fewest model passes of
    at most ``per_pass`` points, the steps spread evenly so no pass runs nearly empty.

    captum splits the steps of every image of a call into chunks of ``internal_batch_size // images``,
    so a call of g images runs ceil(steps / (per_pass // g)) passes. With 50 steps, 4 images and a best
    batch of 16 that is 13 passes for the four images together, against 16 one image at a time.
    """
    n_images, per_pass = max(1, n_images), max(1, per_pass)
    plans = []
    for group in range(1, min(n_images, per_pass) + 1):
        chunk = min(steps, per_pass // group)
        passes = -(-n_images // group) * -(-steps // chunk)
        plans.append((passes, -group, group, -(-steps // -(-steps // chunk))))
    _, _, group, points = min(plans)
    return group, points


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
