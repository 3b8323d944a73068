"""background: does the model read the background? Darken or recolour only the background."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from xai_audit.api import (
    HypothesisContext,
    HypothesisPlugin,
    HypothesisResult,
    InterventionOptions,
    intervention_result,
    region_masks,
)


class BackgroundOptions(InterventionOptions):
    mode: Literal["darken", "recolour"] = Field("recolour", description="darken the background, or paint it one colour")
    factor: float = Field(0.2, ge=0, le=1, description="darken: brightness multiplier of the background")
    color: tuple[float, float, float] = Field((0.1, 0.6, 0.2), description="recolour: RGB in [0, 1]")
    region: str = Field("background", description="the region mask that is the background")


class BackgroundHypothesis(HypothesisPlugin):
    name = "background"
    description = "Darken or recolour only the background (from region masks) and compare predictions."
    Options = BackgroundOptions

    def augmentation(self, finding, result):
        """The background changed as tested, in a random colour each time."""
        return {"transform": "background", "mode": self.options.mode, "color": "random"}

    def test(self, context: HypothesisContext) -> HypothesisResult:
        opts: BackgroundOptions = self.options

        def change(images: np.ndarray, samples) -> np.ndarray:
            mask = region_masks(samples, opts.region, self.name)[:, None]
            if opts.mode == "darken":
                return np.where(mask, images * opts.factor, images)
            colour = np.asarray(opts.color, np.float32).reshape(1, 3, 1, 1)
            return np.where(mask, colour, images)

        what = (
            f"the background is darkened to {100 * opts.factor:.0f} %" if opts.mode == "darken"
            else f"the background is painted RGB({', '.join(f'{c:.2f}' for c in opts.color)})"
        )
        return intervention_result(context, change, what=what, options=opts)
