"""The ``onnx`` model adapter: onnxruntime on the CPU, no gradients.

Perturbation methods (occlusion, LIME, every hypothesis, group accuracy)
work; methods that need gradients are refused when the plan is validated.
Display images are mapped to the model's input by the plan's input spec.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from xai_audit.api import (
    InputSpec,
    LoadContext,
    ModelAdapter,
    ModelAdapterPlugin,
    ModelError,
    Options,
    Preprocess,
)


class OnnxModelOptions(Options):
    path: str = Field(..., description="the .onnx file")
    classes: list[str] = Field(..., description="class names in output order")
    input: InputSpec = Field(default_factory=InputSpec)
    output: int = Field(0, ge=0, description="which model output holds the logits")
    threads: int = Field(0, ge=0, description="intra-op threads (0: onnxruntime's default)")


class OnnxModelPlugin(ModelAdapterPlugin):
    name = "onnx"
    description = "An ONNX file run with onnxruntime as a black box (perturbation methods only)."
    Options = OnnxModelOptions
    provides_gradients = False

    def load(self, context: LoadContext) -> ModelAdapter:
        import onnxruntime as ort

        opts: OnnxModelOptions = self.options
        path = Path(opts.path).expanduser()
        path = path if path.is_absolute() else context.base_dir / path
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        options = ort.SessionOptions()
        if opts.threads:
            options.intra_op_num_threads = opts.threads
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{path}: cannot load ONNX model: {first}") from None
        return OnnxModelAdapter(session, path, opts)


class OnnxModelAdapter(ModelAdapter):
    module = None  # a black box: no gradients

    def __init__(self, session: Any, path: Path, opts: OnnxModelOptions):
        self.session = session
        self.path = path
        self.opts = opts
        self.classes = list(opts.classes)
        self.preprocess = Preprocess(opts.input)
        self.input_name = session.get_inputs()[0].name
        self.device = "cpu"
        self._fingerprint: str | None = None
        shape = session.get_inputs()[0].shape
        channels = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else None
        if channels is not None and channels != opts.input.channels:
            raise ModelError(f"{path}: the model takes {channels} channel(s), but model.input.channels is {opts.input.channels}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.preprocess(images.detach().cpu().float()).numpy()
        outputs = self.session.run(None, {self.input_name: x.astype(np.float32)})
        logits = np.asarray(outputs[self.opts.output])
        if logits.ndim != 2 or logits.shape[1] != len(self.classes):
            raise ModelError(
                f"{self.path.name}: output has shape {logits.shape}, expected (batch, {len(self.classes)}) for {len(self.classes)} classes"
            )
        return torch.from_numpy(logits.astype(np.float32))

    def files(self) -> list[Path]:
        return [self.path]

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256(self.path.read_bytes())
            h.update(self.opts.input.model_dump_json().encode())
            h.update(repr(self.classes).encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        return {
            "source": str(self.path),
            "architecture": "ONNX graph (onnxruntime, black box)",
            "classes": len(self.classes),
            "input": self.opts.input.describe(),
        }
