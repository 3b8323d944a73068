"""Honest discovery: null audits rarely confirm a cue.

A model with no real effect (logits drawn afresh at every call; its gradients
sit in the top-left corner, so attribution-clusters proposes that corner for
every class it sees) is audited with both built-in discoverers: discover on one
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
