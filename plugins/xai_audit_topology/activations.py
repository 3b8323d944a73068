"""Activations of one layer as a point cloud.

``images`` mode gives one point per image: the layer's output pooled over
space (``mean`` or ``max``) or flattened; a transformer block's token
sequence (N, tokens, hidden) becomes one point per image by its class token
(the first) or by the mean over its tokens (``tokens``), never by averaging
over the hidden units. ``latent`` mode gives one point per
spatial position of a conv layer: the channel vector there, so the cloud is
of what the layer "sees" at each place. Both are computed with a forward
hook, batched under ``no_grad`` for the cloud, and differentiably (with
respect to the input pixels) for the collapse step.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from xai_audit.api import ModelAdapter


class LayerError(ValueError):
    pass


def resolve_layer(model: ModelAdapter, name: str | None) -> str:
    """The layer to read: ``name``, or the adapter's default (the last conv layer)."""
    layers = model.layers()
    if name in (None, "default", "final"):
        name = model.default_layer
        if name is None:
            raise LayerError("the model names no default layer; give 'layer' in the options")
    if name not in layers:
        near = ", ".join(sorted(layers)[:12])
        raise LayerError(f"the model has no layer {name!r}; its layers include: {near}")
    return name


@contextmanager
def capture(model: ModelAdapter, layers: Sequence[str]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Collects the output of each of ``layers`` on every forward pass inside the block."""
    store: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    modules = model.layers()
    handles = []
    for name in layers:
        def hook(_module: Any, _inputs: Any, output: Any, name: str = name) -> None:
            store[name].append(output[0] if isinstance(output, (tuple, list)) else output)

        handles.append(modules[name].register_forward_hook(hook))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def to_points(act: torch.Tensor, cloud: str, pool: str, tokens: str = "class") -> torch.Tensor:
    """Layer output (N, C, h, w), (N, tokens, hidden) or (N, D) -> points: (N, D) or, for ``latent``, (N*h*w, C).

    A token sequence gives one point per image of its hidden size: the class token (``tokens="class"``,
    the first token) or the mean over the tokens (``tokens="mean"``)."""
    if act.ndim == 3 and cloud != "latent":
        return act[:, 0] if tokens == "class" else act.mean(dim=1)
    if cloud == "latent":
        if act.ndim != 4:
            raise LayerError(f"a latent cloud needs a conv layer (N, C, h, w); this layer gives {tuple(act.shape)}")
        return act.permute(0, 2, 3, 1).reshape(-1, act.shape[1])
    if act.ndim == 2:
        return act
    if pool == "mean":
        return act.flatten(2).mean(dim=2) if act.ndim > 2 else act
    if pool == "max":
        return act.flatten(2).amax(dim=2)
    return act.flatten(1)


@dataclass
class Cloud:
    """A layer's activations as points, and where each point comes from."""

    layer: str
    points: np.ndarray  # (P, D) float32
    owner: np.ndarray  # (P,) index of the image each point belongs to
    position: np.ndarray | None  # (P, 2) row, col in the layer's grid (latent clouds)
    grid: tuple[int, int] | None  # the layer's (h, w) for latent clouds
    shape: tuple[int, ...] = ()  # the layer's output per image, e.g. (C, h, w) or (tokens, hidden)

    def point_from(self, cloud: str, pool: str, tokens: str) -> str:
        """How one image's activations became its point(s), in words."""
        if cloud == "latent":
            return "the channel vector at each position"
        if len(self.shape) == 2:
            return "the class token (the first)" if tokens == "class" else f"the mean over {self.shape[0]} tokens"
        if len(self.shape) == 1:
            return "the layer's output vector"
        return {"mean": "mean over positions", "max": "max over positions", "flatten": "flattened"}[pool]


def activation_clouds(
    model: ModelAdapter, images: np.ndarray, layers: Sequence[str], *, cloud: str = "images", pool: str = "mean",
    batch_size: int = 64, tokens: str = "class",
) -> dict[str, Cloud]:
    """The cloud of each of ``layers`` for display-space ``images`` (N, 3, H, W), in one pass over the images."""
    layers = list(dict.fromkeys(layers))
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    grids: dict[str, tuple[int, int] | None] = {name: None for name in layers}
    shapes: dict[str, tuple[int, ...]] = {}
    with torch.no_grad(), capture(model, layers) as store:
        for start in range(0, len(images), batch_size):
            batch = torch.as_tensor(images[start : start + batch_size], dtype=torch.float32, device=model.device)
            for outputs in store.values():
                outputs.clear()
            model.forward(batch)
            for name in layers:
                if not store[name]:
                    raise LayerError(f"layer {name!r} was not called by the model's forward pass")
                act = store[name][-1].detach()
                if act.ndim == 4:
                    grids[name] = (int(act.shape[2]), int(act.shape[3]))
                shapes[name] = tuple(int(d) for d in act.shape[1:])
                chunks[name].append(to_points(act, cloud, pool, tokens).float().cpu().numpy())
    clouds = {name: _cloud(name, np.concatenate(chunks[name]), len(images), cloud, grids[name]) for name in layers}
    for name, found in clouds.items():
        found.shape = shapes[name]
    return clouds


def activation_cloud(model: ModelAdapter, images: np.ndarray, layer: str, **kwargs: Any) -> Cloud:
    return activation_clouds(model, images, [layer], **kwargs)[layer]


def _cloud(layer: str, points: np.ndarray, n_images: int, cloud: str, grid: tuple[int, int] | None) -> Cloud:
    points = points.astype(np.float32)
    if cloud == "latent":
        assert grid is not None
        per = grid[0] * grid[1]
        owner = np.repeat(np.arange(n_images), per)
        rr, cc = np.divmod(np.arange(per), grid[1])
        position = np.tile(np.stack([rr, cc], axis=1), (n_images, 1))
        return Cloud(layer, points, owner, position, grid)
    return Cloud(layer, points, np.arange(n_images), None, grid)


def differentiable_points(
    model: ModelAdapter, images: torch.Tensor, layer: str, *, cloud: str = "images", pool: str = "mean",
    tokens: str = "class",
) -> torch.Tensor:
    """Points of ``images`` (n, 3, H, W), differentiable with respect to the pixels."""
    with capture(model, [layer]) as store:
        model.forward(images)
    if not store[layer]:
        raise LayerError(f"layer {layer!r} was not called by the model's forward pass")
    return to_points(store[layer][-1], cloud, pool, tokens).float()
