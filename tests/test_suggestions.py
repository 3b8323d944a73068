"""An explainer's suggested hypothesis that the plan already tests is not tested twice (issue 16).

The topology explainer suggests occluding the regions its collapsed feature changes most. On the demo
that repeated the plan's own occlude-regions test (same regions, same fill, the same effects) and still
entered the Holm family. A suggestion the plan covers is dropped and points at the planned test; one
it does not cover is tested with the plan's settings for what it leaves unsaid (label_regions, fill).
"""

from __future__ import annotations

import numpy as np

from conftest import plan_text
from xai_audit.contract.types import Explanation
from xai_audit.plan import load_plan
from xai_audit.run.steps import Explained, suggested_steps

PLANNED = ("  - occlude-regions: {regions: [eyes, mouth, hair], fill: blur, label_regions: [eyes, mouth],\n"
           "                     groups: {face: [eyes, mouth]}}\n  - luminance: {factor: 0.2}\n")


def _suggest(registry, write_plan, wishes):
    plan = load_plan(write_plan(plan_text("", PLANNED)), registry)
    explanation = Explanation(method="topology", sample_ids=[], targets=np.zeros(0, int),
                              maps=np.zeros((0, 8, 8), np.float32), signed=False, suggested_hypotheses=wishes)
    explained = Explained({"topology": explanation}, {"topology": {}})
    suggested: dict = {}
    steps = suggested_steps(registry, list(plan.hypotheses), explained, suggested, [])
    return steps, explained.entries["topology"]["suggestions"]


def test_a_suggestion_the_plan_covers_is_not_tested_again(registry, write_plan):
    steps, rows = _suggest(registry, write_plan, [
        {"plugin": "occlude-regions", "options": {"regions": ["mouth", "hair"]}, "why": "the feature moves there"},
        {"plugin": "luminance", "options": {}, "why": "it got darker"},
    ])
    assert steps == []
    assert [r["tested_as"] for r in rows] == ["occlude-regions", "luminance"]


def test_a_new_suggestion_keeps_the_plans_label_regions_and_fill(registry, write_plan):
    steps, rows = _suggest(registry, write_plan, [
        {"plugin": "occlude-regions", "options": {"regions": ["nose", "mouth"]}, "why": "the feature moves there"},
        {"plugin": "luminance", "options": {"factor": 0.5}, "why": "half as bright"},
    ])
    assert [s.name for s in steps] == [r["tested_as"] for r in rows] == ["occlude-regions-from-topology",
                                                                         "luminance-from-topology"]
    occlude = steps[0].options_dict()
    assert occlude["regions"] == ["nose", "mouth"] and occlude["label_regions"] == ["eyes", "mouth"]
    assert occlude["fill"] == "blur" and occlude["groups"] is None  # the plan's groups are tested by the plan
    assert steps[1].options_dict()["factor"] == 0.5
