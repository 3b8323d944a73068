"""Grad-CAM (captum ``LayerGradCam``), for CNNs and for vision transformers.

A CNN layer's output is a feature map (N, C, h, w): the map is the ReLU of
the channels weighted by their mean gradient, upsampled to display size.

A transformer block's output is a token sequence (N, T, D). The class token
(and any other prefix token) is dropped and the patch tokens are laid out on
the patch grid (N, D, rows, cols), so Grad-CAM sees a feature map. Where the
classifier reads only the class token after the last block, gradients never
reach the patch tokens at that block's output; the map is then taken at the
block's input (the token stream its attention mixes into the class token).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

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
    first_tensor,
    forward_in_best_layout,
    in_best_layout,
    resolve_layer,
    token_grid,
)
from xai_audit_captum._common import images_tensor, targets_tensor


class GradCamOptions(Options):
    layer: str | None = Field(None, description="layer name; default: the model's default layer (last conv / last block)")
    relu: bool = Field(True, description="keep only evidence for the class (Grad-CAM's ReLU)")
    batch_size: int | None = Field(None, ge=1, description="images per pass; default: automatic")


class GradCamExplainer(ExplainerPlugin):
    name = "gradcam"
    description = "Grad-CAM (captum LayerGradCam): a layer's channels weighted by their gradients; ViT tokens on the patch grid."
    Options = GradCamOptions
    needs_gradients = True
    needs_layer_hooks = True

    def explain(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> Explanation:
        maps, where = self._maps(model, samples, targets)
        return Explanation(
            method=self.name,
            sample_ids=[s.id for s in samples],
            targets=np.asarray(targets),
            maps=maps,
            signed=not self.options.relu,
            notes=[f"Grad-CAM at {where}, upsampled (bilinear) to the display size."]
            + ([f"Layer: the model's default layer, {model.default_layer_reason}."]
               if self.options.layer is None and getattr(model, "default_layer_reason", "") else []),
            run={"batch_size": int(self.options.batch_size
                                   or best_batch_size(model, tuple(samples[0].image.shape), backward=True))},
        )

    def explain_maps(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> np.ndarray:
        return self._maps(model, samples, targets)[0]

    def model_passes(self, model: ModelAdapter, n: int, image_shape: tuple[int, ...],
                     maps_only: bool = False) -> ModelPasses:
        """One forward and backward pass an image, and one image forward to read the layer's output shape
        (a transformer whose layer's output reaches the classifier through its class token alone costs one
        image forward and backward more, not counted here)."""
        return ModelPasses(forward=1, backward=n)

    def _maps(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray) -> tuple[np.ndarray, str]:
        from captum.attr import LayerAttribution, LayerGradCam

        opts: GradCamOptions = self.options
        images = in_best_layout(model, images_tensor(samples, model.device), backward=True)
        forward = forward_in_best_layout(model, tuple(images.shape[1:]), backward=True)
        target = targets_tensor(targets, model.device)
        name, layer = resolve_layer(model, opts.layer)
        height, width = images.shape[-2:]
        shape = _output_shape(model, layer, images[:1])
        size = opts.batch_size or best_batch_size(model, tuple(images.shape[1:]), backward=True)
        out = []
        if len(shape) == 4:
            where = f"the output of '{name}' ({shape[1]} channels, {shape[2]}x{shape[3]})"
            cam = LayerGradCam(forward, layer)
            for part in batch_slices(len(images), size):
                attr = cam.attribute(images[part], target=target[part], relu_attributions=opts.relu)
                out.append(LayerAttribution.interpolate(attr.detach(), (height, width), "bilinear")[:, 0].cpu())
        elif len(shape) == 3:
            prefix, rows, cols = token_grid(shape[1], height, width)
            grid = _TokenGrid(rows, cols)
            at_input = _class_token_only(model, layer, grid, prefix, images[:1], target[:1])
            where = (
                f"the {'input' if at_input else 'output'} of '{name}': {shape[1] - prefix} patch tokens on a "
                f"{rows}x{cols} grid, {prefix} prefix token(s) dropped"
                + (" (from its output only the class token reaches the classifier)" if at_input else "")
            )
            cam = LayerGradCam(forward, grid)
            with _tokens_through(layer, grid, prefix, at_input):
                for part in batch_slices(len(images), size):
                    attr = cam.attribute(images[part], target=target[part], relu_attributions=opts.relu)
                    out.append(LayerAttribution.interpolate(attr.detach(), (height, width), "bilinear")[:, 0].cpu())
        else:
            raise ValueError(
                f"layer '{name}' outputs shape {tuple(shape)}; Grad-CAM needs a feature map (N, C, h, w) or tokens (N, T, D)"
            )
        return torch.cat(out).numpy().astype(np.float32), where


class _TokenGrid(torch.nn.Module):
    """Patch tokens (N, rows*cols, D) -> a feature map (N, D, rows, cols); captum hooks this module."""

    def __init__(self, rows: int, cols: int):
        super().__init__()
        self.rows, self.cols = rows, cols

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n, _, d = tokens.shape
        return tokens.transpose(1, 2).reshape(n, d, self.rows, self.cols)


def _through_grid(tokens: torch.Tensor, grid: _TokenGrid, prefix: int) -> torch.Tensor:
    """The same tokens, with the patch tokens routed through ``grid`` (values unchanged)."""
    patches = grid(tokens[:, prefix:])  # (N, D, rows, cols)
    return torch.cat([tokens[:, :prefix], patches.flatten(2).transpose(1, 2)], dim=1)


@contextmanager
def _tokens_through(layer: torch.nn.Module, grid: _TokenGrid, prefix: int, at_input: bool) -> Iterator[None]:
    if at_input:

        def pre_hook(_module: Any, args: tuple, kwargs: dict) -> Any:
            if args:
                return (_through_grid(args[0], grid, prefix), *args[1:]), kwargs
            key = next(iter(kwargs))
            return args, {**kwargs, key: _through_grid(kwargs[key], grid, prefix)}

        handle = layer.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:

        def hook(_module: Any, _inputs: Any, output: Any) -> Any:
            if isinstance(output, torch.Tensor):
                return _through_grid(output, grid, prefix)
            return (_through_grid(output[0], grid, prefix), *output[1:])

        handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _output_shape(model: ModelAdapter, layer: torch.nn.Module, image: torch.Tensor) -> tuple[int, ...]:
    seen: list[tuple[int, ...]] = []
    handle = layer.register_forward_hook(lambda _m, _i, o: seen.append(tuple(first_tensor(o).shape)))
    try:
        with torch.no_grad():
            model.forward(image)
    finally:
        handle.remove()
    if not seen:
        raise ValueError("the chosen layer did not run in the model's forward pass")
    return seen[0]


def _class_token_only(
    model: ModelAdapter, layer: torch.nn.Module, grid: _TokenGrid, prefix: int, image: torch.Tensor, target: torch.Tensor
) -> bool:
    """True when no gradient reaches the patch tokens at the layer's output."""
    if prefix == 0:
        return False
    captured: list[torch.Tensor] = []
    handle = grid.register_forward_hook(lambda _m, _i, o: captured.append(o))
    try:
        with _tokens_through(layer, grid, prefix, at_input=False):
            x = image.detach().requires_grad_(True)
            score = model.forward(x).gather(1, target.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, captured[0], allow_unused=True)
    finally:
        handle.remove()
    return grad is None or float(grad.abs().max()) == 0.0
