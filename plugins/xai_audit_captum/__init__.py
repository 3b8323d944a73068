"""Built-in attribution explainers built on captum: Integrated Gradients, saliency, Grad-CAM, occlusion."""

from __future__ import annotations

from xai_audit.api import ExplainerPlugin, hookimpl
from xai_audit_captum.gradcam import GradCamExplainer
from xai_audit_captum.integrated_gradients import IntegratedGradientsExplainer
from xai_audit_captum.occlusion import OcclusionExplainer
from xai_audit_captum.saliency import SaliencyExplainer


@hookimpl
def register_explainers() -> list[type[ExplainerPlugin]]:
    return [IntegratedGradientsExplainer, SaliencyExplainer, GradCamExplainer, OcclusionExplainer]
