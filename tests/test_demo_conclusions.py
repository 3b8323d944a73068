"""The demo's conclusions: the planted shortcut and the rare skin tone are found, and only when planted;
so are the corner stamp and the green background no hypothesis names (found by discovery).

The shortcut demo's model is trained once per session (the ``demo_cache``
fixture, shared with test_demo.py). The clean model and the ``--verify``
fine-tuning each train another model, so those tests are marked slow.
"""

from __future__ import annotations

import csv
import json
import re

import pytest
from typer.testing import CliRunner

from xai_audit.cli import app


def run_demo(out, cache, *extra: str) -> dict:
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--cache-dir", str(cache), "--quiet", *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text())


def test_the_planted_shortcuts_and_skin_tone_gap_are_the_top_findings(tmp_path, demo_cache):
    results = run_demo(tmp_path / "report", demo_cache)
    findings = results["findings"]
    shortcuts = [f for f in findings if f["kind"] == "shortcut"]
    # shortcuts first (the one the plan names and the two it does not), then the skin-tone gap
    assert findings[: len(shortcuts)] == shortcuts
    shortcut = next(f for f in shortcuts if f["hypothesis"] == "luminance")
    assert shortcut["class"] == "sad" and "'sad' rises from" in shortcut["detail"]
    assert shortcut["p_value_adjusted"] < 0.05 and shortcut["severity"] == "high"
    # the rare skin tone VI is the worst, by a gap whose interval excludes zero; its size (6 to 11 points)
    # turns on the CPU that trained the model (AVX2 and AVX-512 kernels train other weights from the same
    # seed), and with it whether it holds after Holm and how severe it is: where it holds, it is the first
    # finding after the shortcuts; where not, the report says it cannot tell (test_demo asks the same)
    groups = results["hypotheses"]["group-accuracy"]
    assert groups["details"]["worst"] == "VI" and groups["ci"][0] > 0, groups["claim"]
    if groups["verdict"] == "supported":
        bias = findings[len(shortcuts)]
        assert bias["kind"] == "bias" and bias["group"]["column"] == "skin_tone" and bias["group"]["worst"] == "VI"
        assert bias["p_value_adjusted"] < 0.05 and bias["severity"] in ("medium", "high"), bias
    else:
        assert any("group-accuracy" in str(e.get("source")) for e in results["limitations"]), results["limitations"]
    # the corner stamp and the green background, which no hypothesis names, found by discovery and
    # confirmed on the held-back half, by place and by colour
    found = {f["discovered"]["discoverer"]: f for f in shortcuts if f.get("discovered")}
    stamp, tint = found["attribution-clusters"], found["property-slices"]
    assert "for 'happy'" in stamp["discovered"]["description"] and "top-left" in stamp["discovered"]["description"]
    assert "'surprise'" in tint["discovered"]["description"] and "green" in tint["discovered"]["description"]
    for finding in (stamp, tint):
        entry = results["hypotheses"][finding["hypothesis"]]
        assert entry["verdict"] == "supported" and "held-back images only" in entry["test"]
        assert finding["p_value_adjusted"] < 0.05
    # the report names them first too, says which came from discovery, and what to fine-tune on
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.index("Predictions drain into &#39;sad&#39;") < html.index("skin_tone VI")
    assert "Found by discovery" in html
    # the demo holds no hostile string: nothing the report shows is cut at the display limit (the report's
    # own sentences and the built-in plugins' notes were, a discovery intro and a topology significance note);
    # only the plan as run shows each of its strings cut at 200 characters, by design
    shown = re.sub(r'<pre class="plan">.*?</pre>', "", html, flags=re.S)
    assert "characters in all; whole in results.json" not in shown
    rows = list(csv.DictReader((tmp_path / "report" / "finetune_manifest.csv").open()))
    assert any(r["action"] == "augment" and "luminance" in r["augmentation"] for r in rows)
    assert any(r["action"] == "add-group" and r["group"] == "skin_tone=VI" for r in rows)
    for finding in (stamp, tint):
        assert any(r["finding"] == finding["source"] and "discovered:" in r["augmentation"] for r in rows)


@pytest.mark.slow
def test_without_shortcuts_neither_planted_effect_is_flagged(tmp_path, demo_cache):
    results = run_demo(tmp_path / "clean", demo_cache, "--no-shortcuts")
    kinds = {f["kind"] for f in results["findings"]}
    assert "bias" not in kinds
    assert results["hypotheses"]["group-accuracy"]["verdict"] == "not supported"
    lum = results["hypotheses"]["luminance"]
    assert lum["verdict"] == "supported"  # a clean model is fragile in the dark ...
    # ... and its darkened faces do not drain into 'sad'. They do drain into 'happy' (+32 pp at 20 %
    # brightness): a property of this clean CNN, which the audit rightly reports as a finding of its own
    assert lum["tests"][0]["details"]["gain_by_class"]["sad"] < 0.05
    # nor do they under the battery's darkening corruptions. (Heavy Gaussian noise or blur may still drain this
    # clean CNN's predictions into one class, 'sad' included: a property of the model, which the battery reports)
    darkening = ("luminance / shortcut", "corruptions / shortcut: darken", "corruptions / shortcut: brightness")
    assert not any(f["kind"] == "shortcut" and f.get("class") == "sad" and f["source"].endswith(darkening)
                   for f in results["findings"]), [f["source"] for f in results["findings"]]
    # the audited faces carry the stamp and the tint, but this model never learned them: discovery confirms
    # no cue of a class
    assert not any(f.get("discovered") and f["kind"] == "shortcut" for f in results["findings"])


@pytest.mark.slow
def test_verify_fine_tunes_on_the_recommendations_and_halves_both_planted_gaps(tmp_path, demo_cache):
    results = run_demo(tmp_path / "verify", demo_cache, "--verify")
    v = results["verification"]
    assert (tmp_path / "verify" / "after" / "report.html").exists()
    # the demo fine-tunes with the luminance augmentation and new skin-tone VI images (not yet with the
    # discovered cues removed: their augmentations are listed as not used)
    for hypothesis, kind in (("luminance", "shortcut"), ("group-accuracy", "bias")):
        row = next(c for c in v["comparisons"] if c["kind"] == kind and c["source"].startswith(f"hypotheses.{hypothesis}"))
        assert row["shrunk_by"] >= 0.5, row
    assert any(u["action"] == "add-group" for u in v["fine_tune"]["used"])
    assert any(s["action"] == "relabel-or-add" for s in v["fine_tune"]["skipped"])
    html = (tmp_path / "verify" / "report.html").read_text()
    assert "Before and after fine-tuning" in html
