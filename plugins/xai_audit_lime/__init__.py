"""Built-in LIME explainer (the ``lime`` package) with quickshift superpixels."""

from __future__ import annotations

from xai_audit.api import ExplainerPlugin, hookimpl
from xai_audit_lime.explainer import LimeExplainer


@hookimpl
def register_explainers() -> list[type[ExplainerPlugin]]:
    return [LimeExplainer]
