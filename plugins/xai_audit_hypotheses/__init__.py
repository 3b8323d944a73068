"""Built-in hypotheses: interventions on display-space images, group accuracy, another data set."""

from __future__ import annotations

from xai_audit.api import HypothesisPlugin, hookimpl
from xai_audit_hypotheses.background import BackgroundHypothesis
from xai_audit_hypotheses.custom import TransformHypothesis
from xai_audit_hypotheses.dataset_shift import DatasetShiftHypothesis
from xai_audit_hypotheses.face_mask import MaskLowerFaceHypothesis
from xai_audit_hypotheses.grayscale import GrayscaleHypothesis
from xai_audit_hypotheses.groups import GroupAccuracyHypothesis
from xai_audit_hypotheses.luminance import LuminanceHypothesis
from xai_audit_hypotheses.occlusion import OccludeRegionsHypothesis


@hookimpl
def register_hypotheses() -> list[type[HypothesisPlugin]]:
    return [
        GrayscaleHypothesis,
        LuminanceHypothesis,
        BackgroundHypothesis,
        OccludeRegionsHypothesis,
        MaskLowerFaceHypothesis,
        DatasetShiftHypothesis,
        TransformHypothesis,
        GroupAccuracyHypothesis,
    ]
