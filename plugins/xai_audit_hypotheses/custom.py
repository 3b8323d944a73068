"""transform: any image transform given by import path becomes a hypothesis, no plugin needed.

    hypotheses:
      - transform: {callable: "fx.py:fog", description: "fog covers the image", kwargs: {density: 0.3}}
      - transform: {as: blur, callable: "my_pkg.fx:blur", description: "the image is out of focus"}

``callable`` is ``file.py:function`` (a file, relative to the plan's folder) or ``package.module:function``
(looked for in the plan's folder first, then on the import path). ``fn(images, **kwargs)`` receives
display-space images, a numpy float32 array (N, 3, H, W) with values in [0, 1] (RGB, also for a grayscale
model: its one channel is made from these), and returns changed copies of the same shape and range; it must
not change ``images`` in place (it gets a copy). ``validate`` imports it, so a callable that cannot be
imported is refused before the run. Several transforms are listed with ``as:``, each a step of its own.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np
from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from xai_audit.api import (
    HypothesisContext,
    HypothesisPlugin,
    HypothesisResult,
    ImportProblem,
    InterventionOptions,
    PlanError,
    import_object,
    intervention_result,
    split_spec,
)


class TransformOptions(InterventionOptions):
    callable: str = Field(..., description='"file.py:function" (beside the plan) or "package.module:function"')
    description: str = Field("", description='what the transform does, read as "the model ... when <description>"')
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments passed to the function")
    preserves_label: bool = Field(True, description="false when the transform may change the true class")
    #: the plan's folder, where ``callable`` is imported from (not an option: set from the plan when it is read)
    _base_dir: str | None = PrivateAttr(None)

    @field_validator("callable")
    @classmethod
    def _import_path(cls, value: str, info: ValidationInfo) -> str:
        try:
            split_spec(value)  # the shape, even where the plan's folder is unknown
            base = (info.context or {}).get("base_dir")
            if base is not None:  # a plan read from its folder: the callable must import from there, now
                load_callable(value, base)
        except ImportProblem as exc:
            raise PydanticCustomError("import", "{why}", {"why": str(exc)}) from None
        return value

    @model_validator(mode="after")
    def _remember_folder(self, info: ValidationInfo) -> "TransformOptions":
        base = (info.context or {}).get("base_dir")
        if base is not None:
            self._base_dir = str(base)
        return self


def load_callable(path: str, base_dir: Any = None) -> Callable[..., Any]:
    """The function ``path`` names, imported from the plan's folder; ValueError (one line) when it cannot be."""
    target = import_object(path, base_dir)
    if not callable(target):
        raise ImportProblem(f"{path!r} is {type(target).__name__}, not a function")
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
        try:
            fn = load_callable(opts.callable, opts._base_dir)
        except ImportProblem as exc:
            raise PlanError([f"transform.callable: {exc}"]) from exc
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
