from __future__ import annotations

import pytest

from conftest import plan_text
from xai_audit.errors import PlanError
from xai_audit.plan import load_plan, parse_plan


def problems_of(text, registry):
    with pytest.raises(PlanError) as info:
        parse_plan(text, registry, filename="plan.yaml")
    return info.value.problems


def test_valid_plan_loads_with_defaults(write_plan, registry):
    plan = load_plan(write_plan(plan_text("  - integrated-gradients: {steps: 8}\n", "  - grayscale\n")), registry)
    assert plan.seed == 3
    assert [s.name for s in plan.explainers] == ["integrated-gradients"]
    assert plan.explainers[0].options.steps == 8
    assert [s.name for s in plan.hypotheses] == ["grayscale"]
    assert plan.report.formats == ["html", "pdf", "json"]
    assert plan.as_run()["model"]["adapter"] == "torch"


def test_unknown_explainer_names_line_and_suggests(registry):
    text = plan_text("  - integrated-gradient: {steps: 8}\n")
    (problem,) = problems_of(text, registry)
    line = text.splitlines().index("  - integrated-gradient: {steps: 8}") + 1
    assert problem.startswith(f"plan.yaml:{line}: explainers[0]")
    assert 'did you mean "integrated-gradients"' in problem


def test_option_typo_names_field_line_and_nearest_option(registry):
    text = plan_text("  - integrated-gradients:\n      stpes: 8\n")
    (problem,) = problems_of(text, registry)
    line = text.splitlines().index("      stpes: 8") + 1
    assert problem.startswith(f"plan.yaml:{line}: explainers[0].integrated-gradients.stpes")
    assert 'did you mean "steps"' in problem


def test_every_problem_is_reported_at_once(registry):
    text = plan_text("  - integrated-gradients: {steps: -1}\n", "  - greyscale\n").replace("seed: 3", "sed: 3")
    problems = problems_of(text, registry)
    assert any("sed" in p and 'did you mean "seed"' in p for p in problems), problems
    assert any("steps" in p for p in problems) and any("greyscale" in p for p in problems), problems


def test_second_pass_reports_all_plugin_problems(registry):
    text = plan_text("  - integrated-gradients: {steps: -1}\n", "  - greyscale\n")
    problems = problems_of(text, registry)
    assert len(problems) == 2
    assert any("steps" in p and "greater than or equal" in p for p in problems)
    assert any('unknown hypothesis "greyscale"' in p and 'did you mean "grayscale"' in p for p in problems)


def test_unknown_adapter_and_loader(registry):
    text = plan_text().replace("adapter: torch", "adapter: torhc").replace("loader: synthetic-faces", "loader: synth-faces")
    problems = problems_of(text, registry)
    assert any(p.startswith("plan.yaml:3: model.adapter") and '"torch"' in p for p in problems), problems
    assert any("dataset.loader" in p and '"synthetic-faces"' in p for p in problems), problems


def test_yaml_syntax_error_has_line(registry):
    (problem,) = problems_of("seed: 1\nmodel: [unclosed\n", registry)
    assert problem.startswith("plan.yaml:")
    assert "not valid YAML" in problem


def test_missing_file(tmp_path, registry):
    with pytest.raises(PlanError, match="plan file not found"):
        load_plan(tmp_path / "nope.yaml", registry)


def test_duplicate_step_is_an_error(registry):
    problems = problems_of(plan_text("", "  - grayscale\n  - grayscale\n"), registry)
    assert any("listed twice" in p for p in problems)


def test_bad_sample_count(registry):
    text = plan_text().replace("  split: test\n", "  split: test\n  sample: -4\n")
    problems = problems_of(text, registry)
    assert any("dataset.sample" in p for p in problems)
