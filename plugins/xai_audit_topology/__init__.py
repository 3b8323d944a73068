"""Topological explanations: persistent homology of activations, and the pixels that carry it."""

from __future__ import annotations

from xai_audit import hookimpl
from xai_audit.types import ExplainerPlugin

from xai_audit_topology.explainer import TopologyExplainer


@hookimpl
def register_explainers() -> list[type[ExplainerPlugin]]:
    return [TopologyExplainer]
