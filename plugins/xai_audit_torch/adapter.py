"""The ``torch`` model adapter.

A model is either ``module: package.module:factory`` (or ``path/to/file.py:factory``)
plus an optional ``weights`` state-dict file loaded with ``weights_only=True``,
or a ``torchscript`` file. Display-space images (RGB in [0, 1]) are mapped to
the model's input by a differentiable step: resize, grayscale when the model
takes one channel, then normalise with ``mean`` and ``std``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from xai_audit.errors import ModelError
from xai_audit.types import LoadContext, ModelAdapter, ModelAdapterPlugin, Options


class TorchModelOptions(Options):
    module: str | None = Field(None, description="'package.module:factory' or 'file.py:factory'")
    factory_kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = Field(None, description="state-dict file, loaded with weights_only=True")
    torchscript: str | None = Field(None, description="a TorchScript file (instead of module)")
    classes: list[str] | None = Field(None, description="class names in output order")
    input_size: int | None = Field(None, ge=1, description="resize display images to this square size")
    channels: int = Field(3, description="1 for a grayscale model, 3 for RGB")
    mean: list[float] | None = None
    std: list[float] | None = None
    default_layer: str | None = Field(None, description="layer for Grad-CAM / activations; default: last conv")

    @model_validator(mode="after")
    def _one_source(self) -> "TorchModelOptions":
        if (self.module is None) == (self.torchscript is None):
            raise ValueError("give exactly one of 'module' (with optional 'weights') or 'torchscript'")
        if self.channels not in (1, 3):
            raise ValueError("channels must be 1 or 3")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) not in (1, self.channels):
                raise ValueError(f"{name} needs 1 or {self.channels} values")
        return self


class TorchModelPlugin(ModelAdapterPlugin):
    name = "torch"
    description = "A torch module from a factory plus weights, or a TorchScript file."
    Options = TorchModelOptions

    def load(self, context: LoadContext) -> ModelAdapter:
        opts: TorchModelOptions = self.options
        files: list[Path] = []
        if opts.torchscript is not None:
            path = _resolve(context.base_dir, opts.torchscript)
            files.append(path)
            try:
                module = torch.jit.load(str(path), map_location=context.device)
            except Exception as exc:
                raise ModelError(f"{path}: cannot load TorchScript model: {exc}") from None
        else:
            assert opts.module is not None
            factory = _import_factory(opts.module, context.base_dir)
            try:
                module = factory(**opts.factory_kwargs)
            except Exception as exc:
                raise ModelError(f"model factory '{opts.module}' raised {type(exc).__name__}: {exc}") from None
            if not isinstance(module, torch.nn.Module):
                raise ModelError(f"model factory '{opts.module}' returned {type(module).__name__}, not a torch.nn.Module")
            if opts.weights is not None:
                path = _resolve(context.base_dir, opts.weights)
                files.append(path)
                _load_weights(module, path, context.device)
        classes = opts.classes or list(getattr(module, "classes", []) or [])
        if not classes:
            raise ModelError("the model's class names are unknown: give 'classes' under 'model' in the plan")
        return TorchModelAdapter(module, classes, opts, files, context.device)


class TorchModelAdapter(ModelAdapter):
    def __init__(self, module: torch.nn.Module, classes: list[str], opts: TorchModelOptions, files: list[Path], device: str):
        self.module = module.to(device).eval()
        self.classes = list(classes)
        self.opts = opts
        self._files = files
        self.device = device
        channels = opts.channels
        mean = opts.mean or [0.0] * channels
        std = opts.std or [1.0] * channels
        self._mean = torch.tensor(mean * (channels if len(mean) == 1 else 1), device=device).view(1, -1, 1, 1)
        self._std = torch.tensor(std * (channels if len(std) == 1 else 1), device=device).view(1, -1, 1, 1)
        convs = [name for name, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)]
        self.default_layer = opts.default_layer or (convs[-1] if convs else None)
        if self.default_layer is not None and self.default_layer not in dict(module.named_modules()):
            raise ModelError(f"model has no layer named '{self.default_layer}' (default_layer)")
        self._fingerprint: str | None = None

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Display space (N, 3, H, W) in [0, 1] -> the model's input, differentiably."""
        x = images
        size = self.opts.input_size
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        if self.opts.channels == 1:
            weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            x = (x * weights).sum(dim=1, keepdim=True)
        return (x - self._mean) / self._std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.module(self.preprocess(images))
        if logits.ndim != 2 or logits.shape[1] != len(self.classes):
            raise ModelError(
                f"model output has shape {tuple(logits.shape)}, expected (batch, {len(self.classes)}) for {len(self.classes)} classes"
            )
        return logits

    def layers(self) -> dict[str, Any]:
        return {name: m for name, m in self.module.named_modules() if name}

    def files(self) -> list[Path]:
        return list(self._files)

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name, tensor in sorted(self.module.state_dict().items()):
                t = tensor.detach().cpu().contiguous()
                h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
                h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
            h.update(self.opts.model_dump_json(exclude={"weights", "torchscript"}).encode())
            h.update(repr(type(self.module)).encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        n_params = sum(p.numel() for p in self.module.parameters())
        return {
            "source": self.opts.torchscript or self.opts.module,
            "architecture": type(self.module).__name__,
            "parameters": n_params,
            "classes": len(self.classes),
            "input": f"{self.opts.channels} channel(s)"
            + (f", resized to {self.opts.input_size}x{self.opts.input_size}" if self.opts.input_size else ""),
            "default_layer": self.default_layer,
        }


def _resolve(base_dir: Path, value: str) -> Path:
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    return path


def _import_factory(spec: str, base_dir: Path) -> Any:
    if ":" not in spec:
        raise ModelError(f"model.module '{spec}' must look like 'package.module:factory' or 'file.py:factory'")
    mod_name, _, attr = spec.rpartition(":")
    try:
        if mod_name.endswith(".py"):
            path = _resolve(base_dir, mod_name)
            unique = "xai_audit_user_model_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
            module_spec = importlib.util.spec_from_file_location(unique, path)
            assert module_spec is not None and module_spec.loader is not None
            mod = importlib.util.module_from_spec(module_spec)
            sys.modules[unique] = mod
            module_spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(mod_name)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot import model module '{mod_name}': {type(exc).__name__}: {exc}") from None
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise ModelError(f"model module '{mod_name}' has no attribute '{attr}'") from None


def _load_weights(module: torch.nn.Module, path: Path, device: str) -> None:
    try:
        state = torch.load(str(path), map_location=device, weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: cannot load weights safely (weights_only=True): {first}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: expected a state dict, found {type(state).__name__}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ModelError(f"{path}: weights do not fit the model architecture: {detail}") from None
