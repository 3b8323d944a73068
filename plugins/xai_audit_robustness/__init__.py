"""Robustness, calibration and data checks, as hypothesis plugins.

* ``corruptions``: the common corruptions of Hendrycks & Dietterich (ImageNet-C) at five severities, from the
  ``imagecorruptions`` package, each against the clean images with paired tests.
* ``adversarial``: the smallest L-infinity perturbation that flips each image (PGD with a bisection over the
  budget), per class and per group, with a test of whether some group flips at smaller budgets.
* ``calibration``: expected calibration error with a bias-corrected interval and a consistency test,
  reliability diagrams, the calibration gap between groups, and the temperature that would fix it.
* ``data-checks``: likely label errors (confident learning), exact and near duplicates, leakage into a
  reference set, image-property drift against it, and property outliers.
"""

from __future__ import annotations

from xai_audit.api import HypothesisPlugin, hookimpl
from xai_audit_robustness.adversarial import AdversarialHypothesis
from xai_audit_robustness.calibration import CalibrationHypothesis
from xai_audit_robustness.corruptions import CorruptionsHypothesis
from xai_audit_robustness.data_checks import DataChecksHypothesis


@hookimpl
def register_hypotheses() -> list[type[HypothesisPlugin]]:
    return [CorruptionsHypothesis, AdversarialHypothesis, CalibrationHypothesis, DataChecksHypothesis]
