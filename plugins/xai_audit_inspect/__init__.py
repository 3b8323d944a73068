"""Built-in inspection plugins: neuron activation maps and feature visualisation."""

from __future__ import annotations

from xai_audit import hookimpl
from xai_audit.types import ExplainerPlugin

from xai_audit_inspect.features import FeatureVisualisationExplainer
from xai_audit_inspect.neurons import NeuronMapsExplainer


@hookimpl
def register_explainers() -> list[type[ExplainerPlugin]]:
    return [NeuronMapsExplainer, FeatureVisualisationExplainer]
