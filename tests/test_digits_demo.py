"""The digits demo (issue 18, item 4): occlusion beside Integrated Gradients, their agreement, rubbish images;
and the sanity check's similarity, which must not count a shared black background as agreement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from xai_audit.cli import app
from xai_audit.demo.plan import digits_plan
from xai_audit.judge import trust
from xai_audit.plan import parse_plan


def test_the_digits_plan_runs_occlusion_beside_integrated_gradients_and_looks_for_rubbish_images(registry, tmp_path):
    data = digits_plan(tmp_path / "weights.pt")
    plan = parse_plan(json.dumps(data), registry)  # the plan the demo writes is a valid plan
    plugins = {s.plugin.name: s for s in plan.explainers}
    assert {"integrated-gradients", "occlusion", "feature-visualisation"} <= set(plugins)
    assert plugins["feature-visualisation"].options.rubbish  # noise the model calls a digit with certainty
    # agreement is computed between explainers that are trust-checked on the same images
    assert plan.explain.trust.enabled and plan.explain.trust.sanity_samples > 0


def test_pixels_both_maps_leave_at_zero_are_not_counted_as_agreement():
    """A black background under a black baseline: the maps are zero there whatever the weights."""
    rng = np.random.default_rng(0)
    background = np.zeros((4, 16, 16), dtype=bool)
    background[:, :, :6] = True  # 6/16 of every image is background
    trained, randomised = rng.random((2, 4, 16, 16))  # independent where the digit is
    trained[background] = randomised[background] = 0.0
    everywhere = trust.spearman(trained, randomised).mean()
    where_either, zero_in_both = trust.spearman_where_either(trained, randomised)
    assert everywhere > 0.45  # the tied zeros alone read as a map that survived randomisation ...
    assert abs(where_either.mean()) < 0.15  # ... though nothing of the ordering did
    assert np.allclose(zero_in_both, 6 / 16)
    # maps without exact zeros are measured as before
    a, b = rng.random((2, 3, 8, 8)) + 0.1
    assert np.allclose(trust.spearman_where_either(a, b)[0], trust.spearman(a, b))


def test_the_verdict_says_when_the_ties_and_not_the_method_changed_it():
    sanity = {"verdict": "partly", "final_similarity": 0.51, "final_similarity_all_pixels": 0.8,
              "verdict_all_pixels": "fails", "zero_in_both": 0.27, "stages": []}
    text = trust.verdict({"sanity": sanity, "faithfulness": {}})["text"]
    assert "0.51" in text and "over every pixel it would be 0.80 (fails)" in text and "27%" in text
    assert "the metric's, not the method's" in text
    same = dict(sanity, verdict_all_pixels="partly")
    assert "over every pixel" not in trust.verdict({"sanity": same, "faithfulness": {}})["text"]


@pytest.mark.slow
def test_digits_demo_end_to_end(tmp_path: Path, demo_cache: Path):
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["demo", "--data", "digits", "--out", str(out), "--cache-dir", str(demo_cache),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    explainers = results["explainers"]
    for name in ("integrated-gradients", "occlusion", "feature-visualisation"):
        assert explainers[name]["status"] == "ok", name
    ig, occlusion = explainers["integrated-gradients"]["trust"], explainers["occlusion"]["trust"]
    assert -1 <= ig["agreement"]["occlusion"] <= 1 and ig["agreement"]["occlusion"] == occlusion["agreement"]["integrated-gradients"]
    rubbish = explainers["feature-visualisation"]["tables"]["rubbish_images"]
    assert len(rubbish) == 10 and all(0 <= row["probability"] <= 1 for row in rubbish)
    # Integrated Gradients against a black baseline is zero on the black background in both models
    sanity = ig["sanity"]
    assert sanity["zero_in_both"] > 0.1 and sanity["final_similarity_all_pixels"] > sanity["final_similarity"]
    html = (out / "report.html").read_text()
    assert "Matrix of rank correlations between 3 explainers" in html  # the agreement figure
    assert "Rubbish images: noise scored with certainty" in html and "over every pixel it would be" in html


def test_the_report_shows_the_all_pixel_similarity_and_the_tied_share():
    from xai_audit.report.explain_context import trust_summary

    sanity = {"verdict": "partly", "threshold": 0.7, "final_similarity": 0.51, "final_similarity_all_pixels": 0.8,
              "verdict_all_pixels": "fails", "zero_in_both": 0.27,
              "stages": [{"layers_randomised": 8, "of": 8, "similarity": 0.51}]}
    rows = {r["key"]: r["value"] for r in trust_summary({"trust": {"sanity": sanity, "verdict": {}}})["rows"]}
    assert rows["sanity over every pixel, with the pixels zero in both maps (their share)"] == "0.80 → fails (27 %)"
    sanity["zero_in_both"] = 0.0  # nothing tied: one row, as before
    rows = trust_summary({"trust": {"sanity": sanity, "verdict": {}}})["rows"]
    assert not any("every pixel" in r["key"] for r in rows)
