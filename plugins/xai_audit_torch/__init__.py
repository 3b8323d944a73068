"""Built-in model adapter: a torch module (factory + weights) or a TorchScript file."""

from __future__ import annotations

from xai_audit.api import ModelAdapterPlugin, hookimpl
from xai_audit_torch.adapter import TorchModelPlugin


@hookimpl
def register_model_adapters() -> list[type[ModelAdapterPlugin]]:
    return [TorchModelPlugin]
