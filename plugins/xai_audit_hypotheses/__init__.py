"""Built-in hypotheses: interventions on display-space images, and group accuracy."""

from __future__ import annotations

from xai_audit import hookimpl
from xai_audit.types import HypothesisPlugin

from xai_audit_hypotheses.groups import GroupAccuracyHypothesis
from xai_audit_hypotheses.interventions import GrayscaleHypothesis


@hookimpl
def register_hypotheses() -> list[type[HypothesisPlugin]]:
    return [GrayscaleHypothesis, GroupAccuracyHypothesis]
