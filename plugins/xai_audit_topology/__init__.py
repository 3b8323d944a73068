"""Topological explanations: persistent homology of activations, and the pixels that carry it."""

from __future__ import annotations

from xai_audit.api import ExplainerPlugin, hookimpl
from xai_audit_topology.explainer import TopologyExplainer


@hookimpl
def register_explainers() -> list[type[ExplainerPlugin]]:
    return [TopologyExplainer]
