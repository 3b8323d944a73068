"""tiny-cnn: a small torch CNN built from the plan's options, with an optional weights file.

    model:
      adapter: tiny-cnn
      classes: [cat, dog]
      weights: tiny.pt   # optional: torch.save(module.state_dict(), "tiny.pt")
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from xai_audit.api import LoadContext, ModelAdapter, ModelAdapterPlugin, ModelError, Options, hookimpl


class TinyCNNOptions(Options):
    classes: list[str] = Field(min_length=2, description="class names, in the order of the model's outputs")
    width: int = Field(8, ge=1, le=256, description="channels of the first conv layer (the second has twice as many)")
    weights: str | None = Field(None, description="a state-dict file, relative to the plan's folder")
    seed: int = Field(0, description="seeds the initial weights when no weights file is given")


class TinyCNN(nn.Module):
    """Two conv layers, a global average pool and a linear head: any image of 2x2 pixels or more."""

    def __init__(self, n_classes: int, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(nn.functional.max_pool2d(x, 2)))
        return self.head(torch.flatten(self.pool(x), 1))


def tiny_cnn(n_classes: int, width: int = 8, seed: int = 0) -> TinyCNN:
    """The factory: one seed, one set of initial weights (torch's global generator is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyCNN(n_classes, width)


class TinyCNNAdapter(ModelAdapter):
    #: the layer Grad-CAM and the activation explainers use unless the plan names another (a key of layers())
    default_layer = "conv2"

    def __init__(self, module: nn.Module, classes: list[str], weights: Path | None, device: str):
        self.module = module.to(device).eval()  # a torch module: gradient explainers can run
        self.classes = list(classes)
        self.device = device
        self._weights = weights

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # display space (RGB in [0, 1]) -> this model's input ([-1, 1]); torch ops keep it differentiable
        return self.module(images * 2 - 1)

    def layers(self) -> dict[str, Any]:
        # the named sub-modules Grad-CAM, topology and the activation explainers read; the default returns
        # the same for any torch `module`, written out here to show what they need (default_layer is a key)
        return {name: m for name, m in self.module.named_modules() if name}

    def fingerprint(self) -> str:
        h = hashlib.sha256(repr(self.classes).encode())
        for name, tensor in sorted(self.module.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def files(self) -> list[Path]:
        return [self._weights] if self._weights is not None else []

    def describe(self) -> dict[str, Any]:
        return {
            "architecture": "TinyCNN",
            "parameters": sum(p.numel() for p in self.module.parameters()),
            "weights": str(self._weights) if self._weights is not None else "seeded random",
        }


class TinyCNNPlugin(ModelAdapterPlugin):
    name = "tiny-cnn"
    description = "A tiny two-layer torch CNN, from seeded weights or a state-dict file."
    Options = TinyCNNOptions

    def load(self, context: LoadContext) -> ModelAdapter:
        opts: TinyCNNOptions = self.options
        module = tiny_cnn(len(opts.classes), opts.width, opts.seed)
        path = None
        if opts.weights is not None:
            path = Path(opts.weights).expanduser()
            path = path if path.is_absolute() else context.base_dir / path
            if not path.is_file():
                raise ModelError(f"{path}: weights file not found")
            try:
                module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            except Exception as exc:  # one clear line, naming the file
                first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
                raise ModelError(f"{path}: cannot load the weights: {first}") from None
        return TinyCNNAdapter(module, opts.classes, path, context.device)


@hookimpl
def register_model_adapters() -> list[type[ModelAdapterPlugin]]:
    return [TinyCNNPlugin]
