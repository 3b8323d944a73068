"""Built-in inspection plugins: neuron activation maps and feature visualisation."""

from __future__ import annotations

from xai_audit.api import ExplainerPlugin, hookimpl
from xai_audit_inspect.features import FeatureVisualisationExplainer
from xai_audit_inspect.neurons import NeuronMapsExplainer


@hookimpl
def register_explainers() -> list[type[ExplainerPlugin]]:
    return [NeuronMapsExplainer, FeatureVisualisationExplainer]
