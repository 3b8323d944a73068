"""flip: does the model care which way a face looks? A hypothesis that runs its own test.

    hypotheses:
      - flip: {axis: horizontal}
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from xai_audit.api import (
    ALPHA,
    HypothesisContext,
    HypothesisPlugin,
    HypothesisResult,
    Options,
    bootstrap_paired_diff_ci,
    hookimpl,
    mcnemar_exact,
)


class FlipOptions(Options):
    axis: str = Field("horizontal", pattern="^(horizontal|vertical)$", description="which way to mirror")


class FlipHypothesis(HypothesisPlugin):
    name = "flip"
    description = "Mirror every image: a face classifier should not care (horizontal), and may (vertical)."
    Options = FlipOptions

    def test(self, context: HypothesisContext) -> HypothesisResult:
        axis = -1 if self.options.axis == "horizontal" else -2
        # chunk by chunk, so an audit of 100,000 images never holds them all
        after = np.concatenate([
            context.predict(np.ascontiguousarray(np.flip(images, axis=axis))).argmax(axis=1)
            for _, images in context.batches()
        ])
        before = context.probs.argmax(axis=1)
        labels = context.labels
        if labels is None:  # no labels: compare with the model's own clean predictions
            labels = before
        ok_before, ok_after = before == labels, after == labels
        p_value, _, _ = mcnemar_exact(ok_before, ok_after)
        drop = float(ok_before.mean() - ok_after.mean())
        return HypothesisResult(
            claim=f"The model's accuracy drops when images are flipped {self.options.axis}ly.",
            metric="accuracy",
            before=float(ok_before.mean()),
            after=float(ok_after.mean()),
            effect=drop,
            ci=bootstrap_paired_diff_ci(ok_before, ok_after, seed=context.seed),
            p_value=p_value,
            verdict="supported" if p_value < ALPHA and drop > 0 else "not supported",
            n=len(labels),
            test="exact McNemar test",
            kind="fragility",
        )


@hookimpl
def register_hypotheses() -> list[type[HypothesisPlugin]]:
    return [FlipHypothesis]
