"""The in-memory data a report needs beside ``results.json``.

``results.json`` holds every number; it does not hold pixels. The images,
attribution maps and per-sample predictions the figures draw travel here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xai_audit.contract.types import Explanation, HypothesisResult


@dataclass
class ReportArtifacts:
    """Arrays the report draws, keyed the way ``results.json`` names things.

    ``images`` maps a sample id to its display image, float32 (3, H, W) in
    [0, 1]. ``explanations`` maps a plan step name (``"integrated-gradients"``)
    to the :class:`Explanation` it returned. ``predictions`` maps a sample id
    to ``(predicted class index, its probability)``; ``labels`` maps a sample
    id to its true class index, or None when the sample is unlabelled.
    """

    images: dict[str, np.ndarray] = field(default_factory=dict)
    explanations: dict[str, Explanation] = field(default_factory=dict)
    #: plan step name -> the HypothesisResult (for its figure specs and arrays)
    hypotheses: dict[str, HypothesisResult] = field(default_factory=dict)
    predictions: dict[str, tuple[int, float]] = field(default_factory=dict)
    labels: dict[str, int | None] = field(default_factory=dict)
