"""The digits study as a shipped example (issue 18, item 4): ``examples/digits-occlusion-ig``.

The fast test checks that the example plan parses and is the plan ``xai-audit demo --data digits`` runs
(so the two cannot drift apart); the slow test trains the demo's digit CNN with the example's
``train.py`` (into the session's demo cache: trained once per test session) and runs the plan.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from xai_audit.cli import app
from xai_audit.demo.plan import digits_plan
from xai_audit.plan import load_plan
from xai_audit.registry import make_plugin_manager

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits-occlusion-ig"


def _copy(folder: Path) -> Path:
    for name in ("plan.yaml", "train.py"):
        shutil.copy(EXAMPLE / name, folder / name)
    return folder / "plan.yaml"


def test_the_example_plan_is_the_digits_demo_plan_with_its_weights_beside_it(tmp_path):
    path = _copy(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "digits-cnn.pt").write_bytes(b"")  # validation asks only that the file exists
    plan = load_plan(path, make_plugin_manager())
    assert [s.name for s in plan.explainers] == ["integrated-gradients", "occlusion", "feature-visualisation"]
    assert plan.explainers[2].options.rubbish and plan.explain.trust.enabled
    example = yaml.safe_load(path.read_text())
    demo = digits_plan(tmp_path / "models" / "digits-cnn.pt")
    assert example["model"]["weights"] == "models/digits-cnn.pt"
    for key in ("seed", "dataset", "explain", "explainers"):
        assert example[key] == demo[key], key
    assert {k: v for k, v in example["model"].items() if k != "weights"} == {
        k: v for k, v in demo["model"].items() if k != "weights"}
    readme = (EXAMPLE / "README.md").read_text()
    assert "differs" in readme.lower() and "plan.yaml" in readme and "metric" in readme and "method" in readme


@pytest.mark.slow
def test_the_example_trains_and_runs_end_to_end(tmp_path, demo_cache):
    path = _copy(tmp_path)
    subprocess.run([sys.executable, str(tmp_path / "train.py"), "--cache-dir", str(demo_cache)],
                   check=True, cwd=tmp_path, capture_output=True)
    assert (tmp_path / "models" / "digits-cnn.pt").stat().st_size > 0
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--no-cache", "--quiet"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["failures"] == [] and results["accuracy"]["value"] > 0.8
    explainers = results["explainers"]
    assert all(explainers[n]["status"] == "ok" for n in ("integrated-gradients", "occlusion", "feature-visualisation"))
    ig, occlusion = explainers["integrated-gradients"]["trust"], explainers["occlusion"]["trust"]
    assert ig["agreement"]["occlusion"] == occlusion["agreement"]["integrated-gradients"]
    for trust in (ig, occlusion):
        assert trust["verdict"]["level"] in ("trusted", "weak", "not trusted") and trust["sanity"]["stages"]
    # the metric's part: the black background is zero in both of Integrated Gradients' maps, left out
    assert ig["sanity"]["zero_in_both"] > 0.1
    assert ig["sanity"]["final_similarity_all_pixels"] > ig["sanity"]["final_similarity"]
    rubbish = explainers["feature-visualisation"]["tables"]["rubbish_images"]
    assert [row["class"] for row in rubbish] == [str(d) for d in range(10)]
    assert explainers["feature-visualisation"]["scalars"]["rubbish_classes"] == sum(r["rubbish"] for r in rubbish)
