"""The discovery stage end to end: a cue nobody named is proposed on one half and confirmed on the other."""

from __future__ import annotations

import json
import textwrap

from typer.testing import CliRunner

from xai_audit.cli import app

MODEL = textwrap.dedent(
    """
    import torch

    class Corner(torch.nn.Module):
        # 'happy' (index 0) is driven by the brightness of the top-left corner, the rest by the mean colour
        def __init__(self):
            super().__init__()
            self.mix = torch.nn.Conv2d(3, 7, 1)

        def forward(self, x):
            y = self.mix(x).mean(dim=(2, 3))
            corner = x[:, :, 2:8, 2:8].mean(dim=(1, 2, 3))
            return torch.cat([40 * (corner - 0.7)[:, None], y[:, 1:]], dim=1)

    def make():
        torch.manual_seed(0)
        return Corner()
    """
)


def _plan(tmp_path, discoverers: str) -> str:
    (tmp_path / "corner.py").write_text(MODEL)
    (tmp_path / "plan.yaml").write_text(
        "seed: 1\n"
        "model: {adapter: torch, module: corner.py:make, classes: [happy, sad, angry, fear, surprise, disgust, neutral]}\n"
        "dataset: {loader: synthetic-faces, n: 140, size: 64, stamp_class: happy}\n"
        "explain: {samples: 4, trust: {enabled: false}}\n"
        "hypotheses:\n  - grayscale\n"
        f"discoverers:\n{discoverers}"
        "report: {formats: [json, html]}\n"
    )
    return str(tmp_path / "plan.yaml")


def test_a_planted_corner_stamp_is_discovered_and_confirmed_on_held_back_images(tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["run", _plan(tmp_path, "  - attribution-clusters\n  - property-slices\n"),
                                      "--out", str(out), "--no-cache", "-q"])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "results.json").read_text())
    d = r["discovery"]
    assert not set(d["discovery_ids"]) & set(d["held_back_ids"]) and len(d["discovery_ids"]) == 70
    corner = [c for c in d["candidates"] if c["discoverer"] == "attribution-clusters" and c["class"] == "happy"]
    assert corner, d["candidates"]
    entry = r["hypotheses"][corner[0]["tested_as"]]
    assert entry["verdict"] == "supported" and entry["kind"] == "shortcut" and entry["p_value_adjusted"] < 0.05
    assert "held-back images only" in entry["test"]
    # how long each discoverer took is a fact of the run, not of the results
    assert {"discoverer attribution-clusters", "discoverer property-slices"} <= set(r["run"]["steps"])
    assert r["run"]["steps"]["discoverer attribution-clusters"]["seconds"] >= 0
    # in the audit's one Holm family with the plan's own hypothesis, and a finding that says where it came from
    assert r["multiple_testing"]["n_tests"] >= 2
    finding = next(f for f in r["findings"] if f.get("discovered"))
    assert finding["discovered"]["discoverer"] == "attribution-clusters"
    assert any(row["finding"].startswith("hypotheses.discovered:") for row in r["recommendations"])
    html = (out / "report.html").read_text()
    assert "Discovery: cues nobody named" in html and "Found by discovery" in html


def test_without_discoverers_there_is_no_discovery_section(tmp_path):
    out = tmp_path / "report"
    plan = _plan(tmp_path, "")
    text = open(plan).read().replace("discoverers:\n", "")
    open(plan, "w").write(text)
    result = CliRunner().invoke(app, ["run", plan, "--out", str(out), "--no-cache", "-q"])
    assert result.exit_code == 0, result.output
    assert "discovery" not in json.loads((out / "results.json").read_text())
    assert "cues nobody named" not in (out / "report.html").read_text()
