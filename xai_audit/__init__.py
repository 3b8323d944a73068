"""xai-audit: audit what an image classifier looks at, and write it down."""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Decorate a plugin module's hook functions with this.
hookimpl = pluggy.HookimplMarker("xai_audit")

from xai_audit.types import (  # noqa: E402  (public API, after hookimpl)
    Dataset,
    DatasetPlugin,
    Explanation,
    ExplainerPlugin,
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
