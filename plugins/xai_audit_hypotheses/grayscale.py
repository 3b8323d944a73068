"""grayscale: does the model need colour?"""

from __future__ import annotations

from xai_audit.api import (
    HypothesisContext,
    HypothesisPlugin,
    HypothesisResult,
    InterventionOptions,
    intervention_result,
    to_grayscale,
)


class GrayscaleOptions(InterventionOptions):
    pass


class GrayscaleHypothesis(HypothesisPlugin):
    name = "grayscale"
    description = "Does the model need colour? Compare predictions on grayscale copies of the images."
    Options = GrayscaleOptions

    def augmentation(self, finding, result):
        return {"transform": "grayscale"}

    def test(self, context: HypothesisContext) -> HypothesisResult:
        return intervention_result(
            context, lambda images, samples: to_grayscale(images),
            what="the images are shown in grayscale", options=self.options,
        )
