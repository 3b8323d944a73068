"""Built-in transformers plugins: image classifiers, and face-parsing regions."""

from __future__ import annotations

from xai_audit.api import ModelAdapterPlugin, RegionSourcePlugin, hookimpl
from xai_audit_transformers.classifier import TransformersModelPlugin
from xai_audit_transformers.segmentation import SegmentationRegionsPlugin


@hookimpl
def register_model_adapters() -> list[type[ModelAdapterPlugin]]:
    return [TransformersModelPlugin]


@hookimpl
def register_region_sources() -> list[type[RegionSourcePlugin]]:
    return [SegmentationRegionsPlugin]
