"""blur: does the model's accuracy drop when the image (or one region of it) is blurred?

    hypotheses:
      - blur: {sigma: 2.0}
      - blur: {sigma: 3.0, region: eyes}   # needs region masks: the data set's or a region source's

The plugin only says how to change the images; ``intervention_result`` runs the
change chunk by chunk, predicts, and adds the paired test, the shortcut test and
the figures.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from pydantic import Field
from scipy import ndimage

from xai_audit.api import (
    HypothesisContext,
    HypothesisPlugin,
    HypothesisResult,
    InterventionOptions,
    Sample,
    hookimpl,
    intervention_result,
    region_masks,
)


class BlurOptions(InterventionOptions):  # min_effect, min_shift, min_concentration and sample come with it
    sigma: float = Field(2.0, gt=0, le=100, description="standard deviation of the Gaussian blur, in pixels")
    region: str | None = Field(None, description="blur only this region (e.g. eyes); default: the whole image")


class BlurHypothesis(HypothesisPlugin):
    name = "blur"
    description = "Blur every image (or one region) with a Gaussian and compare predictions."
    Options = BlurOptions

    def test(self, context: HypothesisContext) -> HypothesisResult:
        opts: BlurOptions = self.options

        def blur(images: np.ndarray, samples: Sequence[Sample]) -> np.ndarray:
            # images: float32 (N, 3, H, W) in [0, 1]; samples: the N samples they belong to
            blurred = ndimage.gaussian_filter(images, sigma=(0, 0, opts.sigma, opts.sigma))
            if opts.region is None:
                return blurred
            inside = region_masks(samples, opts.region, self.name)[:, None]  # (N, 1, H, W)
            return np.where(inside, blurred, images)

        where = f" inside the {opts.region}" if opts.region else ""
        result = intervention_result(
            context, blur, what=f"the images are blurred{where} (Gaussian, sigma {opts.sigma:g} px)", options=opts
        )
        result.details["sigma"] = opts.sigma
        return result

    def augmentation(self, finding: Mapping[str, Any], result: Mapping[str, Any]) -> dict[str, Any] | None:
        """A fine-tuning augmentation that undoes a blur finding: blur of up to the tested sigma."""
        return {"transform": "gaussian-blur", "sigma": [0.0, float(self.options.sigma)], "region": self.options.region}


@hookimpl
def register_hypotheses() -> list[type[HypothesisPlugin]]:
    return [BlurHypothesis]
