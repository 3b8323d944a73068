"""The demo end to end: the truth is planted, so the audit must find it."""

from __future__ import annotations

import json

from pypdf import PdfReader
from typer.testing import CliRunner

from xai_audit.cli import app

SECTIONS = [
    "Summary of findings",
    "Model and data provenance",
    "Accuracy and confusion matrix",
    "Per-group accuracy",
    "Explanations",
    "Hypotheses",
    "What could not be run",
]


def test_demo_trains_audits_and_finds_the_planted_skin_tone_gap(tmp_path, demo_cache):
    out, cache = tmp_path / "report", demo_cache
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--cache-dir", str(cache), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "test accuracy on clean synthetic faces" in result.output
    results = json.loads((out / "results.json").read_text())
    from test_schema import validate

    validate(results)  # the published schema holds for the demo's results
    assert results["accuracy"]["value"] > 0.85
    assert results["failures"] == []
    # the rare skin tone VI is the worst, by a gap whose interval excludes zero. Whether that gap (6 to 9 points)
    # also holds after Holm turns on the CPU that trained the model (AVX2 and AVX-512 kernels train other
    # weights from the same seed): where it does, it is a finding; where not, the report says it cannot tell
    groups = results["hypotheses"]["group-accuracy"]
    assert groups["details"]["worst"] == "VI" and "VI" in groups["claim"] and groups["ci"][0] > 0, groups["claim"]
    if groups["verdict"] == "supported":
        assert any(f["source"] == "hypotheses.group-accuracy" for f in results["findings"])
    else:
        assert any("group-accuracy" in str(e.get("source")) for e in results["limitations"]), results["limitations"]
    assert any(f.get("group", {}).get("worst") == "VI" or "skin_tone VI" in f["title"] for f in results["findings"]
               if f["kind"] == "bias")

    # every explainer ran, and the gradient maps look where the classes are drawn
    assert {e["status"] for e in results["explainers"].values()} == {"ok"}
    # the classes with a planted cue: darkness ('sad'), the corner stamp ('happy'), the green background ('surprise')
    cued = {results["classes"].index(c) for c in ("sad", "happy", "surprise")}
    # most of the mass on brows, eyes and mouth; Grad-CAM (the last conv, 16x16) of a model that also reads the
    # background spreads more (0.47 measured with the cues planted, 0.69 for integrated gradients)
    for name, least in (("integrated-gradients", 0.5), ("gradcam", 0.4)):
        where = results["explainers"][name]["trust"]["localisation"]
        kept = [m for m, t in zip(where["mass_share_per_sample"], results["explainers"][name]["targets"])
                if t not in cued]
        assert sum(kept) / len(kept) > least, (name, kept)
    assert results["explainers"]["topology"]["scalars"]["significant H0"] >= 1

    html = (out / "report.html").read_text()
    text = " ".join(page.extract_text() for page in PdfReader(out / "report.pdf").pages)
    for heading in SECTIONS:
        assert heading in html
        assert heading in text, heading
    assert "95.4" in html or f"{100 * results['accuracy']['value']:.1f}" in html

    # a second demo reuses the trained model and every cached step
    again = CliRunner().invoke(app, ["demo", "--out", str(out), "--cache-dir", str(cache), "--quiet"])
    assert again.exit_code == 0 and "reused from the cache" in again.output
    assert json.loads((out / "results.json").read_text())["run"]["cache"]["misses"] == 0
