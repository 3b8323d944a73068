"""Neuron activation maps: what each channel of a layer does on an image.

For the chosen layer (default: the model's default layer, the last conv of a
CNN; a transformer block's tokens are laid out on the patch grid) every
channel's activation map is recorded. Per image the "spike" plot shows the
summed activation of each channel: a few tall spikes mean a few channels carry
the image. The top channels' maps are drawn over the image.

The map returned for each image is the mean of its top channels' activations
(negative values clipped), upsampled to display size: where the layer's
strongest channels fire. It does not depend on the target class.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import Field

from xai_audit.api import (
    ExplainerPlugin,
    Explanation,
    ModelAdapter,
    ModelPasses,
    Options,
    Sample,
    best_batch_size,
    layer_activations,
    resolve_layer,
)

#: channels drawn in the "every channel" figure
_MAX_CHANNEL_TILES = 64


class NeuronMapsOptions(Options):
    layer: str | None = Field(None, description="layer name; default: the model's default layer")
    top: int = Field(8, ge=1, le=64, description="top channels drawn per image")
    shown: int = Field(2, ge=0, le=12, description="images drawn with their spike plot and channel maps")
    batch_size: int | None = Field(None, ge=1, description="images per pass; default: automatic")


class NeuronMapsExplainer(ExplainerPlugin):
    name = "neuron-maps"
    description = "Neuron activation maps: each channel's map of a layer, the per-channel 'spike' plot, the top channels."
    Options = NeuronMapsOptions
    needs_gradients = False
    needs_layer_hooks = True

    def explain(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> Explanation:
        opts: NeuronMapsOptions = self.options
        name, _ = resolve_layer(model, opts.layer)
        acts = self._activations(model, samples)  # (N, C, h, w)
        n, channels = acts.shape[:2]
        top_k = min(opts.top, channels)
        spikes = acts.sum(axis=(2, 3))  # (N, C)
        top = np.argsort(-spikes, axis=1, kind="stable")[:, :top_k]  # (N, k)
        maps = _top_channel_maps(acts, top, samples[0].image.shape[1:])
        shown = min(opts.shown, n)
        arrays: dict[str, np.ndarray] = {"spikes": spikes.astype(np.float32), "top_channels": top.astype(np.int32)}
        figures: list[dict] = []
        if shown:
            figures.append({
                "kind": "lines",
                "title": f"Spike plot: summed activation per channel of '{name}'",
                "x": list(range(channels)),
                "series": [{"label": samples[i].id, "y": {"array": f"spikes_{i}"}} for i in range(shown)],
                "xlabel": "channel", "ylabel": "summed activation",
                "caption": "Summed activation of each channel over the image; a few tall spikes mean a few channels carry it.",
                "alt": f"Line plot of the summed activation of each of {channels} channels for {shown} image(s).",
            })
            for i in range(shown):
                arrays[f"spikes_{i}"] = spikes[i].astype(np.float32)
                arrays[f"top_maps_{i}"] = acts[i, top[i]].astype(np.float32)
                arrays[f"image_{i}"] = samples[i].image.astype(np.float32)
                figures.append({
                    "kind": "heatmaps",
                    "title": f"{samples[i].id}: the top {top_k} channels of '{name}'",
                    "maps": {"array": f"top_maps_{i}"},
                    "image": {"array": f"image_{i}"},
                    "titles": [f"ch {int(c)}: {spikes[i, c]:.3g}" for c in top[i]],
                    "signed": bool((acts[i, top[i]] < 0).any()), "columns": min(top_k, 8),
                    "colorbar": "activation",
                    "caption": "Activation maps of the channels with the largest summed activation, over the image; one colour scale.",
                    "alt": f"Activation maps of the {top_k} strongest channels over image {samples[i].id}.",
                })
            tiles = np.argsort(-spikes[0], kind="stable")[:_MAX_CHANNEL_TILES]
            tiles = np.sort(tiles)
            arrays["all_maps_0"] = acts[0, tiles].astype(np.float32)
            figures.append({
                "kind": "heatmaps",
                "title": f"{samples[0].id}: every channel of '{name}'" + (
                    f" (the {len(tiles)} most active)" if len(tiles) < channels else ""),
                "maps": {"array": "all_maps_0"},
                "titles": [f"ch {int(c)}" for c in tiles],
                "signed": bool((acts[0, tiles] < 0).any()), "columns": 16, "colorbar": "activation",
                "caption": "Each channel's activation map on this image, one colour scale for all of them.",
                "alt": f"A grid of {len(tiles)} channel activation maps for image {samples[0].id}.",
            })
        return Explanation(
            method=self.name,
            sample_ids=[s.id for s in samples],
            targets=np.asarray(targets),
            maps=maps,
            signed=False,
            scalars={
                "channels": float(channels),
                "top_channel_share_mean": float(np.mean(
                    np.take_along_axis(np.maximum(spikes, 0), top, 1).sum(1) / np.maximum(np.maximum(spikes, 0).sum(1), 1e-12)
                )),
            },
            arrays=arrays,
            tables={"top_channels": [
                {"sample": s.id, "channels": ", ".join(str(int(c)) for c in top[i])} for i, s in enumerate(samples)
            ]},
            figures=figures,
            notes=[
                f"Layer '{name}', {channels} channels of {acts.shape[2]}x{acts.shape[3]}. The map of each image is the "
                f"mean of its {top_k} most active channels (class-independent); top_channel_share_mean is the share of "
                "positive activation those channels carry."
            ],
        )

    def explain_maps(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> np.ndarray:
        acts = self._activations(model, samples)
        top = np.argsort(-acts.sum(axis=(2, 3)), axis=1, kind="stable")[:, : min(self.options.top, acts.shape[1])]
        return _top_channel_maps(acts, top, samples[0].image.shape[1:])

    def model_passes(self, model: ModelAdapter, n: int, image_shape: tuple[int, ...],
                     maps_only: bool = False) -> ModelPasses:
        """One forward pass an image, its layer's activations read on the way."""
        return ModelPasses(forward=n)

    def _activations(self, model: ModelAdapter, samples: Sequence[Sample]) -> np.ndarray:
        images = np.stack([s.image for s in samples]).astype(np.float32)
        size = self.options.batch_size or best_batch_size(model, images.shape[1:], backward=False)
        return layer_activations(model, images, self.options.layer, batch_size=size)


def _top_channel_maps(acts: np.ndarray, top: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Mean of each image's top channels (clipped at 0), upsampled to ``size`` (N, H, W)."""
    import torch

    chosen = np.take_along_axis(acts, top[:, :, None, None], axis=1)
    mean = np.maximum(chosen, 0).mean(axis=1, keepdims=True)
    up = torch.nn.functional.interpolate(torch.as_tensor(mean), size=tuple(size), mode="bilinear", align_corners=False)
    return up[:, 0].numpy().astype(np.float32)
