"""xai-audit: audit what an image classifier looks at, and write it down."""

from __future__ import annotations

__version__ = "0.1.0"

# The plugin API is xai_audit.api; these names stay here for plugins written against 0.1.
from xai_audit.contract.hookspecs import hookimpl
from xai_audit.contract.types import (
    Dataset,
    DatasetPlugin,
    ExplainerPlugin,
    Explanation,
    HypothesisContext,
    HypothesisPlugin,
    HypothesisResult,
    LoadContext,
    ModelAdapter,
    ModelAdapterPlugin,
    Options,
    RegionSource,
    RegionSourcePlugin,
    Sample,
)

__all__ = [
    "__version__",
    "hookimpl",
    "Dataset",
    "DatasetPlugin",
    "Explanation",
    "ExplainerPlugin",
    "HypothesisContext",
    "HypothesisPlugin",
    "HypothesisResult",
    "LoadContext",
    "ModelAdapter",
    "ModelAdapterPlugin",
    "Options",
    "RegionSource",
    "RegionSourcePlugin",
    "Sample",
]
