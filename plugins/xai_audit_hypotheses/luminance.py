"""luminance: does the model change its mind when the image is darker (or brighter)?"""

from __future__ import annotations

from pydantic import Field

from xai_audit.api import (
    HypothesisContext,
    HypothesisPlugin,
    HypothesisResult,
    InterventionOptions,
    intervention_result,
)


class LuminanceOptions(InterventionOptions):
    factor: float = Field(0.2, gt=0, le=10, description="brightness multiplier: 0.2 is -80 %, 1.5 is +50 %")


def describe_factor(factor: float) -> str:
    change = round(100 * (factor - 1))
    if factor < 1:
        return f"the images are darkened to {100 * factor:.0f} % of their brightness ({change:+d} %)"
    return f"the images are brightened to {100 * factor:.0f} % of their brightness ({change:+d} %)"


class LuminanceHypothesis(HypothesisPlugin):
    name = "luminance"
    description = "Scale every pixel's brightness by a factor (0.2 = -80 %) and compare predictions."
    Options = LuminanceOptions

    def augmentation(self, finding, result):
        """Brightness drawn between the tested factor and 1."""
        return {"transform": "luminance", "factor": sorted([float(self.options.factor), 1.0])}

    def test(self, context: HypothesisContext) -> HypothesisResult:
        factor = self.options.factor
        result = intervention_result(
            context, lambda images, samples: images * factor, what=describe_factor(factor), options=self.options
        )
        result.details["factor"] = factor
        return result
