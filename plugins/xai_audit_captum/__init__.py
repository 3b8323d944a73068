"""Built-in attribution explainers built on captum."""

from __future__ import annotations

from xai_audit import hookimpl
from xai_audit.types import ExplainerPlugin

from xai_audit_captum.integrated_gradients import IntegratedGradientsExplainer


@hookimpl
def register_explainers() -> list[type[ExplainerPlugin]]:
    return [IntegratedGradientsExplainer]
