"""Built-in model adapter: an ONNX file run with onnxruntime, as a black box."""

from __future__ import annotations

from xai_audit.api import ModelAdapterPlugin, hookimpl
from xai_audit_onnx.adapter import OnnxModelPlugin


@hookimpl
def register_model_adapters() -> list[type[ModelAdapterPlugin]]:
    return [OnnxModelPlugin]
