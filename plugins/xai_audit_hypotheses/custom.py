"""transform: any image transform given by import path becomes a hypothesis, no plugin needed.

    hypotheses:
      - transform: {callable: "mypkg.mod:fn", description: "a fog filter", kwargs: {density: 0.3}}

``fn(images, **kwargs)`` receives display-space images (N, 3, H, W) float32
in [0, 1] and returns changed copies of the same shape.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

import numpy as np
from pydantic import Field, field_validator

from xai_audit.api import (
    HypothesisContext,
    HypothesisPlugin,
    HypothesisResult,
    InterventionOptions,
    PlanError,
    intervention_result,
)


class TransformOptions(InterventionOptions):
    callable: str = Field(..., description='import path "package.module:function"')
    description: str = Field("", description='what the transform does, read as "the model ... when <description>"')
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments passed to the function")
    preserves_label: bool = Field(True, description="false when the transform may change the true class")

    @field_validator("callable")
    @classmethod
    def _import_path(cls, value: str) -> str:
        module, _, attr = value.partition(":")
        if not module or not attr or not all(p.isidentifier() for p in module.split(".") + attr.split(".")):
            raise ValueError('must be "package.module:function"')
        return value


def load_callable(path: str) -> Callable[..., Any]:
    module_name, _, attr = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise PlanError([f"transform: cannot import {module_name!r} for callable {path!r}: {exc}"]) from exc
    for part in attr.split("."):
        if not hasattr(target, part):
            raise PlanError([f"transform: {module_name!r} has no {attr!r} (callable {path!r})"])
        target = getattr(target, part)
    if not callable(target):
        raise PlanError([f"transform: {path!r} is not callable"])
    return target


class TransformHypothesis(HypothesisPlugin):
    name = "transform"
    description = "Any image transform given by import path (package.module:function), tested like the built-ins."
    Options = TransformOptions

    def augmentation(self, finding, result):
        """The plan's own transform, applied to training images (not when it hides the label: reliance)."""
        if finding.get("kind") == "reliance":
            return None
        return {"transform": self.options.callable, "kwargs": dict(self.options.kwargs)}

    def test(self, context: HypothesisContext) -> HypothesisResult:
        opts: TransformOptions = self.options
        fn = load_callable(opts.callable)
        what = opts.description or f"the images go through {opts.callable}"

        def change(images: np.ndarray, samples) -> np.ndarray:
            return np.asarray(fn(images.copy(), **opts.kwargs), dtype=np.float32)

        result = intervention_result(context, change, what=what, options=opts, preserves_label=opts.preserves_label)
        result.details["callable"] = opts.callable
        try:
            result.details["source_file"] = inspect.getsourcefile(fn) or ""
        except TypeError:
            pass
        return result
