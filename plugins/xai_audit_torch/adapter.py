"""The ``torch`` model adapter.

A model is either ``module: package.module:factory`` (or ``path/to/file.py:factory``)
plus an optional ``weights`` state-dict file (``.pt``/``.pth`` loaded with
``weights_only=True``, or ``.safetensors``), an architecture by name from timm or
torchvision (``arch: timm:resnet18`` or ``arch: torchvision:resnet18``) built
without pretrained weights and given a local ``weights`` file (nothing is
downloaded; timm / torchvision are the user's install, never this package's
requirement: a missing one is a one-line error naming it), a ``torchscript``
file, a ``torch.export`` program (``exported: model.pt2``) or a trusted pickled
model.
Display-space images (RGB in [0, 1]) are mapped to the model's input by a
differentiable step: resize, grayscale when the model takes one channel, then
normalise with ``mean`` and ``std``.

TorchScript and torch.export models run forward and backward (occlusion, LIME,
Integrated Gradients, saliency, every hypothesis), but their layers are not
modules that can be hooked: methods that read a layer (Grad-CAM, topology,
neuron maps, feature visualisation) are refused when the plan is validated.

The default layer of a CNN is its last conv layer, except where that conv is
the classifier (as many output channels as classes, globally pooled into the
class scores, as in mini-Xception): then it is the feature layer that feeds it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, model_validator

from xai_audit.api import (
    ImportProblem,
    InputSpec,
    LoadContext,
    ModelAdapter,
    ModelAdapterPlugin,
    ModelError,
    Options,
    Preprocess,
    import_object,
)


class TorchModelOptions(Options):
    module: str | None = Field(None, description="'package.module:factory' or 'file.py:factory'")
    arch: str | None = Field(
        None, description="'timm:<name>' or 'torchvision:<name>': an architecture by name, built with one output "
        "per class and no pretrained weights, given 'weights' (a local file; nothing is downloaded)")
    factory_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the factory (or of timm.create_model / "
        "torchvision.models.get_model for 'arch')")
    weights: str | None = Field(None, description="state-dict file (.pt/.pth loaded with weights_only=True, or .safetensors)")
    torchscript: str | None = Field(None, description="a TorchScript file (instead of module)")
    exported: str | None = Field(None, description="a torch.export program (.pt2, torch.export.save) instead of module")
    model_file: str | None = Field(None, description="a whole pickled model (torch.save(model)); needs trusted: true")
    trusted: bool = Field(False, description="allow loading files that can run code (pickled models)")
    classes: list[str] | None = Field(None, description="class names in output order")
    input: InputSpec = Field(default_factory=InputSpec, description="how display images become the model's input")
    default_layer: str | None = Field(
        None, description="layer for Grad-CAM / activations; default: the last conv, or the feature layer before a "
        "conv classifier head")

    @model_validator(mode="after")
    def _one_source(self) -> "TorchModelOptions":
        sources = [n for n in ("module", "arch", "torchscript", "exported", "model_file")
                   if getattr(self, n) is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of 'module' (with optional 'weights'), 'arch' (with 'weights'), "
                             "'torchscript', 'exported' or 'model_file'")
        if self.weights is not None and self.module is None and self.arch is None:
            raise ValueError("'weights' goes with 'module' or 'arch'")
        if self.arch is not None:
            library, _, name = self.arch.partition(":")
            if library not in ARCH_LIBRARIES or not name.strip():
                raise ValueError(f"'arch' is 'timm:<name>' or 'torchvision:<name>', not {self.arch!r}")
            if self.weights is None:
                raise ValueError("'arch' needs 'weights': a local state-dict file (.safetensors, .pt or .pth); "
                                 "nothing is downloaded")
            if not self.classes:
                raise ValueError("'arch' needs 'classes': the class names in output order (they set its outputs)")
        if self.model_file is not None and not self.trusted:
            raise ValueError(
                "'model_file' is a pickled model, which can run code when loaded: "
                "set 'trusted: true' only for a file you trust, or give 'module' + 'weights' instead"
            )
        return self


class TorchModelPlugin(ModelAdapterPlugin):
    name = "torch"
    description = ("A torch module from a factory or a timm / torchvision architecture by name, plus weights "
                   "(.pt or .safetensors), a TorchScript file, a torch.export program, or a trusted pickled model.")
    Options = TorchModelOptions

    @classmethod
    def no_hooks_reason(cls, options: Options) -> str | None:
        if getattr(options, "torchscript", None) is not None:
            return ("a TorchScript model is compiled, and its layers cannot be hooked "
                    "(register_forward_hook is not supported on ScriptModules)")
        if getattr(options, "exported", None) is not None:
            return ("a torch.export program runs as one flat graph: its layers are not modules that run, "
                    "so no hook on them is ever called")
        return None

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
        elif opts.exported is not None:
            path = _resolve(context.base_dir, opts.exported)
            files.append(path)
            module = _load_exported(path, context.device)
        elif opts.model_file is not None:
            path = _resolve(context.base_dir, opts.model_file)
            files.append(path)
            try:  # the plan said trusted: true (checked when the plan was validated)
                module = torch.load(str(path), map_location=context.device, weights_only=False)
            except Exception as exc:
                raise ModelError(f"{path}: cannot load pickled model: {_first_line(exc)}") from None
            if not isinstance(module, torch.nn.Module):
                raise ModelError(f"{path}: holds a {type(module).__name__}, not a torch.nn.Module")
        elif opts.arch is not None:
            module = build_arch(opts.arch, len(opts.classes or []), opts.factory_kwargs)
            assert opts.weights is not None
            path = _resolve(context.base_dir, opts.weights)
            files.append(path)
            _load_weights(module, path, context.device)
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
        module = module.to(device)
        try:
            module.eval()
        except NotImplementedError:  # a torch.export program: exported in the mode it runs in
            pass
        self.module = module
        self.classes = list(classes)
        self.opts = opts
        self._files = files
        self.device = device
        self.preprocess = Preprocess(opts.input).to(device)
        self.provides_hooks = TorchModelPlugin.no_hooks_reason(opts) is None
        #: a torch.export program exported with a fixed batch size takes batches of exactly this many images
        self._static_batch = _static_batch(module)
        self._default: tuple[str | None, str] | None = None  # (layer, why), chosen on first use
        if opts.default_layer is not None:
            self._default = (opts.default_layer, f"'{opts.default_layer}', the plan's model.default_layer")
            if opts.default_layer not in dict(module.named_modules()):
                raise ModelError(f"model has no layer named '{opts.default_layer}' (default_layer)")
        self._fingerprint: str | None = None

    @property
    def default_layer(self) -> str | None:  # type: ignore[override]
        """Chosen on first use, not when loading: telling a conv head from a feature conv may take one forward
        pass, which must not run before the host has checked (within a time limit) that the model returns."""
        if self._default is None:
            self._default = default_feature_layer(self, len(self.classes))
        return self._default[0]

    @property
    def default_layer_reason(self) -> str:  # type: ignore[override]
        _ = self.default_layer  # chooses it
        assert self._default is not None
        return self._default[1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        if self._static_batch is not None and x.shape[0] != self._static_batch:
            logits = _in_fixed_batches(self.module, x, self._static_batch)
        else:
            logits = self.module(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if logits.ndim != 2 or logits.shape[1] != len(self.classes):
            raise ModelError(
                f"model output has shape {tuple(logits.shape)}, expected (batch, {len(self.classes)}) for {len(self.classes)} classes"
            )
        return logits

    def check(self, height: int, width: int) -> None:
        first = next((m for _, m in conv_layers(self.module)), None)
        channels = self.opts.input.channels
        if first is not None and _in_channels(first) != channels:
            raise ModelError(
                f"the model's first conv layer takes {_in_channels(first)} channel(s), but model.input.channels is {channels}"
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
            "source": (self.opts.torchscript or self.opts.exported or self.opts.model_file or self.opts.arch
                       or self.opts.module),
            "architecture": _architecture(self.module, self.opts),
            "parameters": n_params,
            "classes": len(self.classes),
            "input": self.opts.input.describe(),
            "default_layer": self.default_layer,
            "default_layer_reason": self.default_layer_reason,
            "layer_hooks": "yes" if self.provides_hooks else f"no: {TorchModelPlugin.no_hooks_reason(self.opts)}",
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
    """The factory ``model.module`` names: ``file.py:factory`` or ``package.module:factory``, both from the plan's
    folder first (xai_audit.api.import_object)."""
    try:
        return import_object(spec, base_dir)
    except ImportProblem as exc:
        raise ModelError(f"model.module: {exc}") from None


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


# --------------------------------------------------------------------------- timm / torchvision by name

#: the libraries `arch` names architectures from (each imported only when a plan names it)
ARCH_LIBRARIES = ("timm", "torchvision")


def build_arch(arch: str, n_classes: int, kwargs: dict[str, Any]) -> torch.nn.Module:
    """``timm:<name>`` with ``timm.create_model(name, pretrained=False, num_classes=n)``, or
    ``torchvision:<name>`` with ``torchvision.models.get_model(name, weights=None, num_classes=n)``: the
    architecture alone, its weights from the plan's file. Neither library is a requirement of this package."""
    import importlib

    library, _, name = arch.partition(":")
    name = name.strip()
    try:
        package = importlib.import_module(library if library == "timm" else "torchvision.models")
    except ImportError:
        raise ModelError(f"model.arch {arch!r} needs the {library} package, which is not installed "
                         f"(pip install {library}; it is not a requirement of xai-audit)") from None
    options = {"num_classes": n_classes, **kwargs}
    try:
        if library == "timm":
            module = package.create_model(name, pretrained=False, **options)
        else:
            module = package.get_model(name, weights=None, **options)
    except Exception as exc:  # unknown names: timm RuntimeError, torchvision ValueError
        raise ModelError(f"model.arch {arch!r}: {library} could not build it: {_first_line(exc)}") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"model.arch {arch!r}: {library} returned {type(module).__name__}, not a torch.nn.Module")
    return module


# --------------------------------------------------------------------------- torch.export programs


def _load_exported(path: Path, device: str) -> torch.nn.Module:
    """The runnable module of a ``torch.export.save`` file (``torch.export.load(path).module()``)."""
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: cannot load a torch.export program (a .pt2 file from torch.export.save): "
                         f"{_first_line(exc)}") from None
    try:
        return program.module().to(device)
    except Exception as exc:
        raise ModelError(f"{path}: cannot run the torch.export program: {_first_line(exc)}") from None


def _static_batch(module: torch.nn.Module) -> int | None:
    """The batch size a torch.export program was exported with when that size is fixed (not a symbol)."""
    graph = getattr(module, "graph", None)
    if graph is None or isinstance(module, torch.jit.ScriptModule):
        return None
    names = {n for n, _ in module.named_parameters()} | {n for n, _ in module.named_buffers()}
    for node in graph.nodes:
        if node.op != "placeholder":
            continue
        val = node.meta.get("val")
        shape = getattr(val, "shape", None)
        if shape is None or len(shape) != 4 or str(node.target).replace("_", ".") in names:
            continue
        first = shape[0]
        return int(first) if isinstance(first, int) else None
    return None


def _in_fixed_batches(module: torch.nn.Module, x: torch.Tensor, size: int) -> torch.Tensor:
    """``module`` on ``x`` cut into batches of exactly ``size`` (the last one padded by repeating its last image)."""
    out = []
    for start in range(0, x.shape[0], size):
        part = x[start : start + size]
        n = part.shape[0]
        if n < size:
            part = torch.cat([part, part[-1:].expand(size - n, *part.shape[1:])])
        logits = module(part)
        out.append((logits[0] if isinstance(logits, (tuple, list)) else logits)[:n])
    return torch.cat(out)


def _architecture(module: torch.nn.Module, opts: TorchModelOptions) -> str:
    name = getattr(module, "original_name", None) or type(module).__name__
    if opts.torchscript is not None:
        return f"{name} (TorchScript)"
    if opts.exported is not None:
        return "torch.export program"
    if opts.arch is not None:
        return f"{name} ({opts.arch})"
    return name


# --------------------------------------------------------------------------- the default layer


def _is_conv(m: torch.nn.Module) -> bool:
    """A 2-D convolution, also inside TorchScript (by its original class name) and torch.export programs
    (whose sub-modules only hold parameters: a 4-D weight of its own)."""
    if isinstance(m, torch.nn.Conv2d):
        return True
    if isinstance(m, torch.nn.ConvTranspose2d) or getattr(m, "original_name", "") == "ConvTranspose2d":
        return False
    weight = dict(m.named_parameters(recurse=False)).get("weight")
    if isinstance(m, torch.jit.ScriptModule):
        return getattr(m, "original_name", "") == "Conv2d" or (weight is not None and weight.ndim == 4)
    return weight is not None and weight.ndim == 4


def conv_layers(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of every 2-D conv layer, in the order the model defines them."""
    return [(name, m) for name, m in module.named_modules() if name and _is_conv(m)]


def _out_channels(m: torch.nn.Module) -> int:
    return int(getattr(m, "out_channels", 0) or m.weight.shape[0])


def _in_channels(m: torch.nn.Module) -> int:
    return int(getattr(m, "in_channels", 0) or m.weight.shape[1])


def _weighted(m: torch.nn.Module) -> bool:
    """Owns a weight matrix or kernel (a linear or conv layer), not only norm scales and shifts."""
    return any(p.ndim >= 2 for p in m.parameters(recurse=False))


def default_feature_layer(adapter: "TorchModelAdapter", n_classes: int) -> tuple[str | None, str]:
    """(layer, why): the last conv layer, or, where that conv is the classifier, the feature layer feeding it.

    A conv is the classifier when it has one output channel per class, nothing with weights runs after
    it, and its output is globally pooled into the class scores (checked on one pass where the layers can
    be hooked; from the structure alone where they cannot).
    """
    module = adapter.module
    named = [(name, m) for name, m in module.named_modules() if name]
    convs = [(name, m) for name, m in named if _is_conv(m)]
    if not convs:
        return None, ""
    head_name, head = convs[-1]
    plain = (head_name, f"'{head_name}', the model's last conv layer")
    if _out_channels(head) != n_classes:
        return plain
    order = [name for name, _ in named]
    after = [name for name, m in named[order.index(head_name) + 1 :]
             if not name.startswith(head_name + ".") and _weighted(m)]
    if after:  # a linear classifier follows: the last conv is a feature layer
        return plain
    why = f"the last feature layer before the classifier: the last conv '{head_name}' has one output channel per class ({n_classes})"
    if adapter.provides_hooks:
        measured = _measured_head(adapter, head_name, head, n_classes)
        if measured is None:
            return plain
        feature, pooling, grid = measured
        return feature, (f"'{feature}', {why} and its output is globally {pooling}-pooled into the class scores "
                         f"(checked on one pass), so reading it would show class scores on a {grid[0]}x{grid[1]} "
                         "grid, not features")
    feature = _structural_feature(named, head_name)
    if feature is None:
        return plain
    return feature, (f"'{feature}', {why} and no layer with weights follows it, so it is read as the classifier "
                     "(from the structure alone: this model's layers cannot be hooked to check its pooling)")


def _measured_head(adapter: "TorchModelAdapter", head_name: str, head: torch.nn.Module,
                   n_classes: int) -> tuple[str, str, tuple[int, int]] | None:
    """One pass with hooks: (feature layer, pooling, head grid) when ``head``'s output pooled over space is the
    class scores; None otherwise (or when the pass fails: an image of 64x64 display pixels is tried)."""
    module = adapter.module
    started: list[str] = []
    finished: list[tuple[str, Any]] = []
    seen: dict[str, Any] = {}

    def head_pre(_m: Any, args: tuple) -> None:
        seen.setdefault("input", args[0] if args else None)
        seen.setdefault("finished_before", len(finished))

    handles = [head.register_forward_pre_hook(head_pre),
               head.register_forward_hook(lambda _m, _args, out: seen.setdefault("output", out))]
    for name, m in module.named_modules():
        if name and name != head_name:
            handles.append(m.register_forward_pre_hook(lambda _m, _args, name=name: started.append(name)))
            handles.append(m.register_forward_hook(lambda _m, _args, out, name=name: finished.append((name, out))))
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(adapter.device)
    try:
        with torch.no_grad():
            logits = module(adapter.preprocess(images))
    except Exception:
        return None
    finally:
        for h in handles:
            h.remove()
    out, inp = seen.get("output"), seen.get("input")
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    if not (isinstance(out, torch.Tensor) and out.ndim == 4 and isinstance(inp, torch.Tensor)
            and isinstance(logits, torch.Tensor) and logits.ndim == 2):
        return None
    pooling = None
    for kind, pooled in (("average", out.mean(dim=(2, 3))), ("max", out.amax(dim=(2, 3)))):
        if any(scores.shape == logits.shape and torch.allclose(scores, logits, rtol=1e-4, atol=1e-5)
               for scores in (pooled, torch.softmax(pooled, 1), torch.log_softmax(pooled, 1))):
            pooling = kind
            break
    if pooling is None:
        return None
    # the feature layer: the outermost module whose output is the head's input (the block that feeds it);
    # else the last module to finish before the head with an output of the same shape
    before = finished[: seen["finished_before"]]
    candidates = [name for name, o in before if o is inp]
    if candidates:
        feature: str | None = min(candidates, key=started.index)
    else:
        same = [name for name, o in before if isinstance(o, torch.Tensor) and o.shape == inp.shape]
        feature = same[-1] if same else None
    return (feature, pooling, (int(out.shape[2]), int(out.shape[3]))) if feature else None


def _structural_feature(named: list[tuple[str, torch.nn.Module]], head_name: str) -> str | None:
    """Without hooks: the sibling with weights defined just before the head (the block that feeds it), else the
    conv before it."""
    parent, _, _ = head_name.rpartition(".")
    prefix = parent + "." if parent else ""
    siblings = [name for name, m in named if name.startswith(prefix) and "." not in name[len(prefix):]]
    index = siblings.index(head_name) if head_name in siblings else 0
    for name in reversed(siblings[:index]):
        m = dict(named)[name]
        if any(True for _ in m.parameters()):
            return name
    convs = [name for name, m in named if _is_conv(m) and name != head_name]
    return convs[-1] if convs else None
