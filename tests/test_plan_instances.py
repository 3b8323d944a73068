"""One plugin listed several times in a plan (issue 18): ``as:`` names and ``layers:`` lists."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import EMOTIONS
from xai_audit.audit import run_audit
from xai_audit.cli import app
from xai_audit.errors import PlanError
from xai_audit.judge.checks import evaluate_checks
from xai_audit.plan import load_plan, parse_plan
from xai_audit.plan.checks import parse_check
from xai_audit.run.cache import Cache

TWO_CONVS = textwrap.dedent(
    """
    import torch
    from torch import nn

    class TwoConvs(nn.Module):
        def __init__(self, n_classes=7):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 6, 3, padding=1, stride=2)
            self.pool = nn.AdaptiveAvgPool2d(4)
            self.head = nn.Linear(6 * 16, n_classes)

        def forward(self, x):
            x = torch.relu(self.conv1(x))
            return self.head(torch.flatten(self.pool(torch.relu(self.conv2(x))), 1))

    def make(n_classes=7):
        return TwoConvs(n_classes)
    """
)


def _plan(explainers: str, extra: str = "") -> str:
    return textwrap.dedent(
        f"""\
        seed: 3
        model:
          adapter: torch
          module: two_convs.py:make
          weights: weights.pt
          classes: [{", ".join(EMOTIONS)}]
        dataset:
          loader: synthetic-faces
          split: test
          n: 16
          size: 32
        explain: {{samples: 3, trust: {{steps: 4, sanity_samples: 2, sanity_stages: 1}}}}
        report: {{title: Two layers}}
        explainers:
        """
    ) + explainers + extra


@pytest.fixture
def two_convs(tmp_path):
    (tmp_path / "two_convs.py").write_text(TWO_CONVS)
    namespace: dict = {}
    exec(TWO_CONVS, namespace)
    torch.manual_seed(0)
    torch.save(namespace["make"]().state_dict(), tmp_path / "weights.pt")
    return tmp_path


def _problems(text, registry):
    with pytest.raises(PlanError) as info:
        parse_plan(text, registry, filename="plan.yaml")
    return info.value.problems


def test_as_names_a_step_and_the_plugin_stays_the_plugin(registry):
    plan = parse_plan(_plan("  - gradcam: {as: gradcam-conv1, layer: conv1}\n"
                            "  - {name: gradcam, as: gradcam-conv2, layer: conv2}\n"
                            "  - gradcam\n"), registry)
    assert [(s.name, s.plugin.name, s.options.layer) for s in plan.explainers] == [
        ("gradcam-conv1", "gradcam", "conv1"), ("gradcam-conv2", "gradcam", "conv2"), ("gradcam", "gradcam", None)]
    # the plan as run parses back to the same steps (verify --rerun reads it from results.json)
    again = parse_plan(json.dumps(plan.as_run()), registry)
    assert [(s.name, s.plugin.name, s.options_dict()) for s in again.explainers] == [
        (s.name, s.plugin.name, s.options_dict()) for s in plan.explainers]


def test_layers_expands_to_one_step_per_layer(registry):
    plan = parse_plan(_plan("  - gradcam: {layers: [conv1, conv2], timeout: 30}\n"
                            "  - occlusion: {as: occ-16, window: 16}\n"), registry)
    assert [(s.name, s.options.layer, s.timeout) for s in plan.explainers[:2]] == [
        ("gradcam@conv1", "conv1", 30.0), ("gradcam@conv2", "conv2", 30.0)]
    assert plan.explainers[2].name == "occ-16" and plan.explainers[2].plugin.name == "occlusion"


def test_a_plugin_with_its_own_layers_option_keeps_it(registry):
    plan = parse_plan(_plan("  - topology: {layers: [conv1, conv2]}\n"), registry)
    (step,) = plan.explainers
    assert step.name == "topology" and step.options.layers == ["conv1", "conv2"]


@pytest.mark.parametrize("explainers, field, words", [
    ("  - gradcam: {layer: conv1}\n  - gradcam: {layer: conv2}\n", "explainers[1]", "give the second its own name"),
    ("  - gradcam: {as: g, layer: conv1}\n  - {name: occlusion, as: g}\n", "explainers[1].as", '"g" is listed twice'),
    ("  - gradcam: {layers: [conv1, conv1]}\n", "explainers[0].gradcam.layers[1]", '"gradcam@conv1" is listed twice'),
    ("  - gradcam: {as: 'two words'}\n", "explainers[0].gradcam.as", "must be a name"),
    ("  - gradcam: {layers: conv1}\n", "explainers[0].gradcam.layers", "list of layer names"),
    ("  - gradcam: {layers: [conv1], layer: conv2}\n", "explainers[0].gradcam.layers", "not both"),
    ("  - {name: gradcm, as: x}\n", "explainers[0].name", 'unknown explainer "gradcm"'),
])
def test_bad_instance_names_are_one_line_naming_the_field(registry, explainers, field, words):
    (problem,) = _problems(_plan(explainers), registry)
    assert problem.startswith(f"plan.yaml:") and f": {field}: " in problem and words in problem, problem
    assert "\n" not in problem


def test_duplicate_name_exits_2_on_the_command_line(two_convs):
    path = two_convs / "plan.yaml"
    path.write_text(_plan("  - gradcam: {as: g, layer: conv1}\n  - gradcam: {as: g, layer: conv2}\n"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert '"g" is listed twice' in result.output and "explainers[1].gradcam.as" in result.output


def test_checks_reach_a_step_whose_name_has_dots_and_at(two_convs):
    results = {"explainers": {"gradcam@layer1.0": {"status": "ok", "n_samples": 3}}}
    rows = evaluate_checks([parse_check("explainers.gradcam@layer1.0.n_samples == 3")], results)
    assert rows[0]["status"] == "PASS", rows


def test_two_gradcam_layers_give_two_maps_in_results_and_report(two_convs, registry, tmp_path):
    from xai_audit.report import ReportArtifacts, write_report

    plan = load_plan(_write(two_convs, _plan(
        "  - gradcam: {layers: [conv1, conv2]}\n",
        "checks: ['explainers.gradcam@conv2.trust_level != \"none\"']\n")), registry)
    outcome = run_audit(plan, registry, cache=Cache(None))
    r = outcome.results
    assert set(r["explainers"]) == {"gradcam@conv1", "gradcam@conv2"}
    for name in r["explainers"]:
        assert r["explainers"][name]["status"] == "ok" and r["explainers"][name]["plugin"] == "gradcam"
        assert r["explainers"][name]["trust"], name
    assert r["plan"]["explainers"][1] == {"gradcam": {"as": "gradcam@conv2", **r["explainers"]["gradcam@conv2"]["options"]}}
    one, two = outcome.explanations["gradcam@conv1"].maps, outcome.explanations["gradcam@conv2"].maps
    assert one.shape == two.shape and not np.allclose(one, two)
    assert r["checks"][0]["status"] == "PASS", r["checks"]
    out = tmp_path / "report"
    artifacts = ReportArtifacts(images=outcome.images, explanations=outcome.explanations,
                                hypotheses=outcome.hypotheses, predictions=outcome.predictions, labels=outcome.labels)
    write_report(r, artifacts, out, formats=["html", "json"])
    html = (out / "report.html").read_text()
    assert "gradcam@conv1" in html and "gradcam@conv2" in html


def _write(folder, text):
    path = folder / "plan.yaml"
    path.write_text(text)
    return path
