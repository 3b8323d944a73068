"""The demo's planted cues for discovery: sized by the data set's options, named by no hypothesis of the plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from xai_audit.demo.plan import demo_plan
from xai_audit.demo.train import CUES, recipe_for
from xai_audit_datasets.synthetic_faces import (
    STAMP_SIDE,
    SyntheticFacesDataset,
    SyntheticFacesOptions,
    stamp_box,
)


def test_stamp_side_sizes_the_mark_and_the_default_keeps_the_fingerprint():
    options = {"split": "test", "n": 14, "stamp_class": "happy", "stamp_fraction": 1.0}
    default = SyntheticFacesDataset(SyntheticFacesOptions(**options))
    assert default.fingerprint() == SyntheticFacesDataset(
        SyntheticFacesOptions(**options, stamp_side=STAMP_SIDE)).fingerprint()
    large = SyntheticFacesDataset(SyntheticFacesOptions(**options, stamp_side=0.16))
    assert large.fingerprint() != default.fingerprint()
    y0, x0, y1, x1 = stamp_box(64, 0.16)
    assert (y1 - y0, x1 - x0) == (10, 10) and stamp_box(64) == (2, 2, 8, 8)
    happy = next(i for i in range(14) if large[i].label == 0)
    mask = large[happy].regions["stamp"]
    assert mask.sum() == 100 and mask[y0:y1, x0:x1].all()
    assert np.allclose(large[happy].image[:, mask].mean(), 0.96, atol=0.02)
    assert "rows 2-11, columns 2-11" in large.describe()["planted"][0]
    with pytest.raises(ValueError):
        SyntheticFacesOptions(stamp_side=0.5)


def test_the_demo_plants_the_cues_in_training_and_audit_but_no_hypothesis_names_them():
    assert all(recipe_for("faces", seed=0).train_options[k] == v for k, v in CUES.items())
    assert not set(CUES) & set(recipe_for("faces", seed=0, shortcuts=False).train_options)
    plan = demo_plan(Path("weights.pt"), seed=0)
    assert {k: plan["dataset"][k] for k in CUES} == CUES
    assert [next(iter(d)) for d in plan["discoverers"]] == ["attribution-clusters", "property-slices",
                                                                "property-shifts", "error-slices"]
    # the data checks' reference is the training split, drawn as it was trained (cues included): data, not a
    # hypothesis; everything else the plan tests or explains must not name the cues
    hypotheses = []
    for entry in plan["hypotheses"]:
        (name, options), = entry.items()
        if name == "data-checks":
            assert {k: options["reference"][k] for k in CUES} == CUES
            options = {k: v for k, v in options.items() if k != "reference"}
        hypotheses.append({name: options})
    said = yaml.safe_dump(hypotheses) + yaml.safe_dump(plan["explainers"])
    assert not any(word in said for word in ("stamp", "tint", "corner", "green", "background"))
