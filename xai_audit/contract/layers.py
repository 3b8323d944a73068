"""Reading a model's layers: find one by name, lay transformer tokens on the patch grid, record activations.

Torch only; used by the built-in explainers and open to third-party plugins.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from xai_audit.contract.batching import chunks
from xai_audit.contract.types import ModelAdapter


def resolve_layer(model: ModelAdapter, name: str | None) -> tuple[str, Any]:
    """(name, module) of the named layer, or of the adapter's default layer (the last conv for a CNN)."""
    layers = model.layers()
    if not layers:
        raise ValueError(f"the model adapter ({type(model).__name__}) exposes no layers: its layers() is empty "
                         "(a black box, or an adapter that names none)")
    chosen = name or model.default_layer
    if chosen is None:
        raise ValueError("the model names no default layer; give 'layer' in the explainer's options")
    if chosen not in layers:
        close = [n for n in layers if chosen.split(".")[-1] in n][:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise ValueError(f"the model has no layer named '{chosen}'{hint}")
    return chosen, layers[chosen]


def token_grid(n_tokens: int, height: int, width: int) -> tuple[int, int, int]:
    """(prefix tokens, grid rows, grid columns) for a sequence of ``n_tokens``.

    A ViT's sequence is a few prefix tokens (the class token; a distillation
    token for DeiT; register tokens) followed by the patches row by row. The
    patch grid keeps the image's aspect ratio.
    """
    for prefix in (1, 0, 2, 5, 4, 3):
        n = n_tokens - prefix
        if n <= 0:
            continue
        rows = int(round(math.sqrt(n * height / width)))
        if rows > 0 and n % rows == 0:
            cols = n // rows
            if abs(cols / rows - width / height) <= 0.25 * width / height:
                return prefix, rows, cols
    raise ValueError(f"cannot lay out {n_tokens} tokens as a patch grid for a {height}x{width} image")


def first_tensor(output: Any) -> Any:
    """A layer's output, or the first tensor of a tuple output (transformers blocks)."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"layer output of type {type(output).__name__} is not a tensor")


def as_feature_map(output: Any, height: int, width: int) -> Any:
    """A layer output as (N, C, h, w): feature maps as they are, tokens (N, T, D) on the patch grid."""
    t = first_tensor(output)
    if t.ndim == 4:
        return t
    if t.ndim == 3:
        prefix, rows, cols = token_grid(t.shape[1], height, width)
        return t[:, prefix:].transpose(1, 2).reshape(t.shape[0], t.shape[2], rows, cols)
    raise ValueError(f"layer output of shape {tuple(t.shape)} is neither a feature map nor a token sequence")


def layer_activations(model: ModelAdapter, images: np.ndarray | Any, layer: str | None, batch_size: int = 64) -> np.ndarray:
    """Activations (N, C, h, w) of ``layer`` for display-space images (N, 3, H, W)."""
    import torch

    _, module = resolve_layer(model, layer)
    height, width = (images.shape if hasattr(images, "shape") else np.shape(images))[-2:]
    seen = _hooked_passes(model, images, batch_size, lambda keep: module.register_forward_hook(
        lambda _m, _i, o: keep(as_feature_map(o, height, width).detach().cpu())))
    return torch.cat(seen).numpy().astype(np.float32)


def _hooked_passes(model: ModelAdapter, images: np.ndarray | Any, batch_size: int, register: Any) -> list[Any]:
    """What a hook keeps over no-gradient passes of display-space images (N, 3, H, W): ``register(keep)`` puts the
    hook on and returns its handle; the hook calls ``keep`` with what it read. Even passes, never one image alone:
    the batch changes no bit."""
    import torch

    images = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images,
                             dtype=torch.float32)
    seen: list[Any] = []
    handle = register(seen.append)
    try:
        with torch.no_grad():
            for part in chunks(len(images), batch_size):
                model.forward(images[part].to(model.device))
    finally:
        handle.remove()
    return seen


def head_layer(model: ModelAdapter) -> tuple[str, Any]:
    """(name, module) of the model's classifier head: the last ``torch.nn.Linear`` of its torch ``module``, whose
    input is the penultimate layer (the model's embedding). ValueError for a black box or a model without one."""
    import torch

    module = getattr(model, "module", None)
    if module is None:
        raise ValueError(f"the model ({type(model).__name__}) is a black box: it has no penultimate layer to read")
    heads = [(name, m) for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    if not heads:
        raise ValueError(f"the model ({type(model).__name__}) has no linear classifier head (torch.nn.Linear) "
                         "whose input is its penultimate layer")
    return heads[-1]


def penultimate_activations(model: ModelAdapter, images: np.ndarray | Any, batch_size: int = 64) -> np.ndarray:
    """The model's embedding of display-space images (N, 3, H, W): the input of its classifier head
    (:func:`head_layer`), flattened to (N, D) float32. One forward pass per image, no gradients."""
    import torch

    _, head = head_layer(model)
    seen = _hooked_passes(model, images, batch_size, lambda keep: head.register_forward_pre_hook(
        lambda _m, inputs: keep(first_tensor(inputs).detach().reshape(len(inputs[0]), -1).float().cpu())))
    return torch.cat(seen).numpy().astype(np.float32) if seen else np.zeros((0, 0), np.float32)
