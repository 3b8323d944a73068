"""dark-corner: do the images with a dark top-left corner mostly get one class?

    discoverers:
      - dark-corner: {side: 0.15}
    discover: {held_out: 0.5}

The discoverer sees the discovery half of the audited images with the model's
predictions; it proposes a candidate (which images, what they share in words,
and how to remove it). The host confirms the candidate on the held-back half
with the intervention, a paired test and Holm; only then is it a finding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from xai_audit.api import Candidate, DiscovererPlugin, DiscoveryContext, Options, Sample, hookimpl, sample_chunks


class DarkCornerOptions(Options):
    side: float = Field(0.15, gt=0, le=0.5, description="the corner's side, as a share of the image's side")
    min_members: int = Field(10, ge=2, description="propose nothing with fewer dark-cornered images")
    min_share: float = Field(0.6, gt=0, le=1, description="share of them that one class must get")


def _corner(images: np.ndarray, side: float) -> int:
    return max(1, round(side * min(images.shape[2:])))


class DarkCornerDiscoverer(DiscovererPlugin):
    name = "dark-corner"
    description = "Images whose top-left corner is much darker than the image, when most get one class."
    Options = DarkCornerOptions

    def discover(self, context: DiscoveryContext) -> list[Candidate]:
        o: DarkCornerOptions = self.options
        dark = np.zeros(len(context.samples), bool)
        for rows, images in sample_chunks(context.samples, 256):  # (n, 3, H, W) in [0, 1], chunk by chunk
            k = _corner(images, o.side)
            dark[rows] = images[:, :, :k, :k].mean(axis=(1, 2, 3)) < 0.5 * images.mean(axis=(1, 2, 3))
        if dark.sum() < o.min_members:
            return []
        predicted = context.preds[dark]  # the model's own predictions: no labels needed
        top = int(np.bincount(predicted, minlength=len(context.classes)).argmax())
        share = float((predicted == top).mean())
        if share < o.min_share:
            return []
        label = context.classes[top]
        return [Candidate(
            name=f"{label}-dark-corner",
            description=f"{share:.0%} of the {int(dark.sum())} images with a dark top-left corner are predicted "
                        f"'{label}'",
            cue="region",
            members=[s.id for s, d in zip(context.samples, dark) if d],
            intervention={"side": o.side},  # plain data: cached and written to results.json
            target_class=top,
            evidence={"share": share, "images": int(dark.sum())},
        )]

    def intervention(self, spec: Mapping[str, Any]) -> Callable[[np.ndarray, Sequence[Sample]], np.ndarray]:
        side = float(spec["side"])

        def lighten(images: np.ndarray, samples: Sequence[Sample]) -> np.ndarray:
            """The corner painted in each image's own border colour (its bottom row and right column)."""
            out = images.copy()
            k = _corner(images, side)
            border = np.concatenate([images[:, :, -1, :], images[:, :, :, -1]], axis=2)  # (n, 3, H + W)
            out[:, :, :k, :k] = border.mean(axis=2)[:, :, None, None]
            return out

        return lighten


@hookimpl
def register_discoverers() -> list[type[DiscovererPlugin]]:
    return [DarkCornerDiscoverer]
