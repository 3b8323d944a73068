"""Occlusion: slide a grey or black patch over the image and record how the score drops.

Window and stride are in display pixels. Each pixel's value is the mean drop
of the target logit over the windows that cover it: positive where hiding the
pixel lowers the score (evidence for the class), negative where it raises it.
The windows are captum's ``Occlusion`` windows (the same positions, the last
one clipped at the border, and the same maps: a test holds them to captum's).

The model scores each image once and each occluded copy once; the copies are
composed as ``baseline + shown * (image - baseline)`` from a one-channel
visibility mask, in one operation per pass and in the model's memory layout,
and cut into passes of ``perturbations_per_eval`` copies (by default the
model's best forward batch size; never one copy alone). The drops are then
added into each map window by window, in one fixed order: a copy's score is
the same in any pass of two or more, so the maps do not depend on the batch
size, which says only how fast they came (captum adds the drops of each pass
together first, so its last bits follow the batching).
"""

from __future__ import annotations

from typing import Any, Sequence

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
    prefers_channels_last,
)
from xai_audit_captum._common import images_tensor, targets_tensor


class OcclusionOptions(Options):
    window: int | None = Field(None, ge=1, description="square window side in display pixels; default: 1/8 of the image")
    stride: int | None = Field(None, ge=1, description="step in display pixels; default: half the window")
    baseline: float = Field(0.0, ge=0.0, le=1.0, description="grey level of the occluding patch (0 = black)")
    perturbations_per_eval: int | None = Field(
        None, ge=1, description="occluded copies per pass (speed only: the maps do not change); default: automatic")

    @model_validator(mode="after")
    def _stride_fits(self) -> "OcclusionOptions":
        if self.window is not None and self.stride is not None and self.stride > self.window:
            raise ValueError("stride larger than window leaves pixels never occluded")
        return self


class OcclusionExplainer(ExplainerPlugin):
    name = "occlusion"
    description = "Occlusion (captum's windows): the drop of the class score when a patch of the image is hidden."
    Options = OcclusionOptions
    needs_gradients = False

    def explain(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> Explanation:
        maps, window, stride, batching = self._maps(model, samples, targets)
        n_windows = _n_windows(samples[0].image.shape[1], window, stride) * _n_windows(samples[0].image.shape[2], window, stride)
        return Explanation(
            method=self.name,
            sample_ids=[s.id for s in samples],
            targets=np.asarray(targets),
            maps=maps,
            signed=True,
            scalars={"window": float(window), "stride": float(stride), "windows_per_image": float(n_windows)},
            notes=[
                f"{window}x{window} px windows every {stride} px filled with grey level {self.options.baseline:g}; "
                "each pixel shows the mean drop of the target logit over the windows covering it."
            ],
            run=batching,
        )

    def explain_maps(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> np.ndarray:
        return self._maps(model, samples, targets)[0]

    def model_passes(self, model: ModelAdapter, n: int, image_shape: tuple[int, ...],
                     maps_only: bool = False) -> ModelPasses:
        """Every image once whole and once per window, forward only."""
        height, width = image_shape[-2:]
        window, stride = self._geometry(height, width)
        return ModelPasses(forward=n * (1 + _n_windows(height, window, stride) * _n_windows(width, window, stride)))

    def _geometry(self, height: int, width: int) -> tuple[int, int]:
        """(window, stride) in display pixels: the options', or 1/8 of the image and half of that."""
        opts: OcclusionOptions = self.options
        window = min(opts.window or max(2, round(min(height, width) / 8)), height, width)
        return window, opts.stride or max(1, window // 2)

    def _maps(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray
              ) -> tuple[np.ndarray, int, int, dict[str, Any]]:
        opts: OcclusionOptions = self.options
        images = images_tensor(samples, model.device)
        target = targets_tensor(targets, model.device)
        n, (channels, height, width) = len(images), images.shape[1:]
        window, stride = self._geometry(height, width)
        rows, cols = _starts(height, window, stride), _starts(width, window, stride)
        # captum's order: the row offset moves fastest
        tops = torch.tensor([r for _c in cols for r in rows], device=images.device)
        lefts = torch.tensor([c for c in cols for _r in rows], device=images.device)
        n_windows = len(tops)
        per_pass = opts.perturbations_per_eval or best_batch_size(model, (channels, height, width), backward=False)
        scorer = _Scorer(model, images, opts.baseline, target,
                         prefers_channels_last(model, (channels, height, width), backward=False))
        drops = torch.empty((n, n_windows), dtype=images.dtype)
        passes = batch_slices(n * n_windows, per_pass)
        with torch.no_grad():
            whole = torch.cat([scorer(torch.arange(p.start, p.stop, device=images.device), None, None, window)
                               for p in batch_slices(n, per_pass)])
            for part in passes:
                copies = torch.arange(part.start, part.stop, device=images.device)
                which, w = copies // n_windows, copies % n_windows
                scores = scorer(which, tops[w], lefts[w], window)
                drops[which.cpu(), w.cpu()] = (whole[which] - scores).cpu()
        total = torch.zeros((n, height, width), dtype=images.dtype)
        count = torch.zeros((height, width), dtype=images.dtype)
        for k, (top, left) in enumerate(zip(tops.tolist(), lefts.tolist())):  # window by window, one fixed order
            total[:, top: top + window, left: left + window] += drops[:, k, None, None]
            count[top: top + window, left: left + window] += 1
        maps = (total / count).numpy().astype(np.float32)
        return maps, window, stride, {"copies_per_pass": int(per_pass), "passes": len(passes),
                                      "layout": "channels-last" if scorer.channels_last else "standard"}


class _Scorer:
    """The target logit of images shown through a hidden window: ``scorer(which, tops, lefts, window)`` scores
    copy j of image ``which[j]`` with the window at (``tops[j]``, ``lefts[j]``) hidden (no window: None)."""

    def __init__(self, model: ModelAdapter, images: torch.Tensor, baseline: float, target: torch.Tensor,
                 channels_last: bool):
        self.model, self.baseline, self.target, self.channels_last = model, float(baseline), target, channels_last
        # (N, H, W, C): the copies are built channel-innermost, the layout the model may prefer anyway
        self.offset = (images - self.baseline).permute(0, 2, 3, 1).contiguous()

    def __call__(self, which: torch.Tensor, tops: torch.Tensor | None, lefts: torch.Tensor | None,
                 window: int) -> torch.Tensor:
        _, height, width, channels = self.offset.shape
        shown = torch.ones((len(which), height, width, 1), dtype=self.offset.dtype, device=self.offset.device)
        if tops is not None and lefts is not None:
            r = torch.arange(height, device=shown.device)
            c = torch.arange(width, device=shown.device)
            in_rows = (r >= tops[:, None]) & (r < tops[:, None] + window)  # (k, H)
            in_cols = (c >= lefts[:, None]) & (c < lefts[:, None] + window)  # (k, W)
            shown[(in_rows[:, :, None] & in_cols[:, None, :])] = 0.0
        # baseline + mask * (image - baseline), every copy in one operation
        x = torch.addcmul(shown.new_full((), self.baseline), self.offset[which], shown)
        x = x.permute(0, 3, 1, 2)
        logits = self.model.forward(x if self.channels_last else x.contiguous())
        return logits.gather(1, self.target[which].view(-1, 1))[:, 0]


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Where captum's windows start along one side: every ``stride`` px, the last one past ``size - window``
    clipped at the border."""
    return [k * stride for k in range(_n_windows(size, window, stride))]


def _n_windows(size: int, window: int, stride: int) -> int:
    return (size - window + stride - 1) // stride + 1 if size > window else 1
