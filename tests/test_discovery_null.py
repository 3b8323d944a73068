"""Honest discovery: null audits rarely confirm a cue.

A model with no real effect (logits drawn afresh at every call; its gradients
sit in the top-left corner, so attribution-clusters proposes that corner for
every class it sees) is audited with every built-in discoverer: discover on one
half, confirm on the other with the host's confirmation, Holm across the
audit's candidates. Every finding is a false alarm; the share of audits with
one must stay at the nominal 5 % (bench/discovery.py prints the same rate with
its Clopper-Pearson interval).
"""

from __future__ import annotations

import numpy as np
import pytest

from bench import discovery as bd


def test_the_null_model_proposes_the_corner_and_predicts_at_random():
    model = bd.NullCorner(0)
    samples = bd.faces(60, bd.NULL_SIZE, 0)
    images = np.stack([s.image for s in samples])
    first, second = bd.predictor(model)(images), bd.predictor(model)(images)
    assert (first.argmax(1) != second.argmax(1)).mean() > 0.5  # answers drawn afresh, whatever the image
    audited = bd.faces(bd.NULL_IMAGES, bd.NULL_SIZE, 1)
    null = bd.NullCorner(1)
    stage = bd.discovery_stage(audited, null, bd.predictor(null)(np.stack([s.image for s in audited])), 1)
    assert stage.candidates >= 2  # the stress case: candidates are proposed, each under its null
    assert sum("top-left" in d for d in stage.descriptions) >= 2, stage.descriptions


@pytest.mark.slow
def test_null_audits_confirm_a_discovered_cue_in_at_most_five_percent():
    null = bd.null_audits(100)
    assert null.candidates >= 2 * null.audits  # every audit tests several candidates
    assert null.rate <= 0.05, (null.with_findings, null.audits)
    # each candidate alone, before Holm, also holds its level (binomial noise allowed)
    assert null.confirmed_raw / null.candidates <= 0.08


def test_the_cost_projection_keeps_what_is_capped_and_scales_what_grows():
    # 1,000 images measured: clustering (capped at 300 images) and shifts (capped at 300) stay, the slice search
    # grows with N, confirmation grows with the held-back half up to confirm_images (2,000)
    s = bd.Sized(n=1000, size=224, plain_s=100.0, baseline_s=12.0, discover_s=16.0, confirm_s=10.0, candidates=2,
                 forward_per_image=1.0, gradient_per_image=0.3, plain_forward_per_image=8.0,
                 per_discoverer={"attribution-clusters": 5.0, "property-slices": 1.0, "property-shifts": 10.0})
    plain, discovery = s.projected(10000)
    assert plain == 1000.0
    assert discovery == 5.0 + 10.0 * min(5000, bd.SHIFTED) / min(500, bd.SHIFTED) + 1.0 * 10 + 10.0 * 2000 / 500
    assert s.projected(1000) == (100.0, s.discovery_s)
    assert [p.name for p in bd.discoverers(0)] == ["attribution-clusters", "property-slices", "property-shifts",
                                                    "error-slices"]
