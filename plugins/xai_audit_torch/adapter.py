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
from pydantic import Field, model_validator

from xai_audit.api import (
    InputSpec,
    LoadContext,
    ModelAdapter,
    ModelAdapterPlugin,
    ModelError,
    Options,
    Preprocess,
)


class TorchModelOptions(Options):
    module: str | None = Field(None, description="'package.module:factory' or 'file.py:factory'")
    factory_kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = Field(None, description="state-dict file (.pt/.pth loaded with weights_only=True, or .safetensors)")
    torchscript: str | None = Field(None, description="a TorchScript file (instead of module)")
    model_file: str | None = Field(None, description="a whole pickled model (torch.save(model)); needs trusted: true")
    trusted: bool = Field(False, description="allow loading files that can run code (pickled models)")
    classes: list[str] | None = Field(None, description="class names in output order")
    input: InputSpec = Field(default_factory=InputSpec, description="how display images become the model's input")
    default_layer: str | None = Field(None, description="layer for Grad-CAM / activations; default: last conv")

    @model_validator(mode="after")
    def _one_source(self) -> "TorchModelOptions":
        sources = [n for n in ("module", "torchscript", "model_file") if getattr(self, n) is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of 'module' (with optional 'weights'), 'torchscript' or 'model_file'")
        if self.weights is not None and self.module is None:
            raise ValueError("'weights' goes with 'module'")
        if self.model_file is not None and not self.trusted:
            raise ValueError(
                "'model_file' is a pickled model, which can run code when loaded: "
                "set 'trusted: true' only for a file you trust, or give 'module' + 'weights' instead"
            )
        return self


class TorchModelPlugin(ModelAdapterPlugin):
    name = "torch"
    description = "A torch module from a factory plus weights, a TorchScript file, or a trusted pickled model."
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
                raise ModelError(f"{path}: cannot load TorchScript model: {_first_line(exc)}") from None
        elif opts.model_file is not None:
            path = _resolve(context.base_dir, opts.model_file)
            files.append(path)
            try:  # the plan said trusted: true (checked when the plan was validated)
                module = torch.load(str(path), map_location=context.device, weights_only=False)
            except Exception as exc:
                raise ModelError(f"{path}: cannot load pickled model: {_first_line(exc)}") from None
            if not isinstance(module, torch.nn.Module):
                raise ModelError(f"{path}: holds a {type(module).__name__}, not a torch.nn.Module")
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
        self.preprocess = Preprocess(opts.input).to(device)
        convs = [name for name, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)]
        self.default_layer = opts.default_layer or (convs[-1] if convs else None)
        if self.default_layer is not None and self.default_layer not in dict(module.named_modules()):
            raise ModelError(f"model has no layer named '{self.default_layer}' (default_layer)")
        self._fingerprint: str | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.module(self.preprocess(images))
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if logits.ndim != 2 or logits.shape[1] != len(self.classes):
            raise ModelError(
                f"model output has shape {tuple(logits.shape)}, expected (batch, {len(self.classes)}) for {len(self.classes)} classes"
            )
        return logits

    def check(self, height: int, width: int) -> None:
        first = next((m for m in self.module.modules() if isinstance(m, torch.nn.Conv2d)), None)
        channels = self.opts.input.channels
        if first is not None and first.in_channels != channels:
            raise ModelError(
                f"the model's first conv layer takes {first.in_channels} channel(s), but model.input.channels is {channels}"
            )
        super().check(height, width)

    def layers(self) -> dict[str, Any]:
        return {name: m for name, m in self.module.named_modules() if name}

    def files(self) -> list[Path]:
        return list(self._files)

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = state_dict_fingerprint(
                self.module, self.opts.input.model_dump_json(), self.classes, repr(type(self.module))
            )
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        n_params = sum(p.numel() for p in self.module.parameters())
        return {
            "source": self.opts.torchscript or self.opts.model_file or self.opts.module,
            "architecture": type(self.module).__name__,
            "parameters": n_params,
            "classes": len(self.classes),
            "input": self.opts.input.describe(),
            "default_layer": self.default_layer,
        }


def state_dict_fingerprint(module: torch.nn.Module, *extra: Any) -> str:
    """sha256 of every tensor in the state dict (name, dtype, shape, bytes) and ``extra``."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    for item in extra:
        h.update(repr(item).encode())
    return h.hexdigest()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device=device)
        else:
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
