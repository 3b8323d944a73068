"""Checks gate a release: PASS / WARN / FAIL, exit status 1, JUnit XML; no eval."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from conftest import plan_text
from xai_audit.judge.checks import evaluate_checks
from xai_audit.plan.checks import parse_check
from xai_audit.cli import app
from xai_audit.errors import PlanError
from xai_audit.plan import parse_plan

RESULTS = {
    "accuracy": {"value": 0.9},
    "hypotheses": {
        "grayscale": {"status": "ok", "metric": "accuracy", "effect": 0.12, "verdict": "supported", "plugin": "grayscale"},
        "group-accuracy": {"status": "ok", "plugin": "group-accuracy", "effect": 0.08, "verdict": "supported",
                           "claim": "differs between skin_tone groups (worst: VI).", "details": {"column": "skin_tone"},
                           "p_value_adjusted": 0.001},
    },
    "explainers": {"integrated-gradients": {"sanity": "pass", "scalars": {"convergence_delta_mean": 0.01}}},
}


@pytest.mark.parametrize(
    "check, status",
    [
        ("hypotheses.grayscale.accuracy_drop < 0.10", "FAIL"),
        ("hypotheses.grayscale.accuracy_drop < 0.20", "PASS"),
        ("groups.skin_tone.accuracy_gap < 0.05", "FAIL"),
        ("groups.skin_tone.worst == 'VI'", "PASS"),
        ('explainers.integrated-gradients.sanity == "pass"', "PASS"),
        ("explainers.integrated-gradients.scalars.convergence_delta_mean <= 0.05", "PASS"),
        ("accuracy >= 0.95", "FAIL"),
        ("hypotheses.luminance.accuracy_drop < 0.1", "FAIL"),  # not run: a gate must not pass silently
        ('hypotheses.grayscale.verdict != "supported"', "FAIL"),
    ],
)
def test_checks_evaluate_against_results(check, status):
    (row,) = evaluate_checks([parse_check(check)], RESULTS)
    assert row["status"] == status, row
    if status == "FAIL":
        assert row["reason"]


def test_warn_severity_and_missing_paths():
    (row,) = evaluate_checks([parse_check("accuracy >= 0.95", "warn")], RESULTS)
    assert row["status"] == "WARN"
    (row,) = evaluate_checks([parse_check("hypotheses.luminance.accuracy_drop < 0.1")], RESULTS)
    assert "not in the results" in row["reason"]


@pytest.mark.parametrize(
    "bad",
    ["__import__('os').system('x') == 1", "accuracy < 'high'", "accuracy", "accuracy <> 1", "a.b < 1; rm -rf /"],
)
def test_anything_but_a_comparison_is_refused(bad):
    with pytest.raises(ValueError, match="cannot read check"):
        parse_check(bad)


def test_plan_check_errors_are_located(registry):
    text = plan_text(extra="checks:\n  - accuracy > 0.5\n  - 'accuracy >> 1'\n  - {check: 'accuracy > 0', severity: maybe}\n")
    with pytest.raises(PlanError) as info:
        parse_plan(text, registry, filename="plan.yaml")
    problems = info.value.problems
    line = text.splitlines().index("  - 'accuracy >> 1'") + 1
    assert any(p.startswith(f"plan.yaml:{line}: checks[1]") for p in problems), problems
    assert any("checks[2]" in p and "severity" in p for p in problems), problems


def test_run_exits_1_on_a_failing_check_and_writes_junit(write_plan, tmp_path):
    runner = CliRunner()
    plan = write_plan(plan_text("", "  - grayscale\n", extra="checks:\n  - accuracy > 2\n  - {check: 'accuracy < 0', severity: warn}\n  - accuracy >= 0\n"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(plan), "--out", str(out), "--no-cache", "-q"])
    assert result.exit_code == 1, result.output
    assert "check FAIL: accuracy > 2" in result.output and "check WARN" in result.output and "check PASS" in result.output
    suite = ET.parse(out / "checks.xml").getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    assert (out / "report.html").is_file()  # the report is written whatever the checks say
    html = (out / "report.html").read_text()
    assert '<span class="badge check-fail">FAIL</span></td><td><code>accuracy &gt; 2</code>' in html

    passing = write_plan(plan_text("", "", extra="checks:\n  - accuracy >= 0\n"), "ok.yaml")
    assert runner.invoke(app, ["run", str(passing), "--out", str(tmp_path / "ok"), "--no-cache", "-q"]).exit_code == 0


def test_explainer_trust_reads_as_pass_partly_fail():
    results = {"explainers": {
        "ig": {"status": "ok", "trust": {"sanity": {"verdict": "passes"}, "verdict": {"level": "trusted"}}},
        "maps": {"status": "ok", "trust": {"sanity": {"verdict": "fails"}, "verdict": {"level": "not trusted"}}},
    }}
    rows = evaluate_checks([parse_check('explainers.ig.sanity == "pass"'), parse_check('explainers.maps.sanity == "pass"'),
                            parse_check('explainers.maps.trust_level != "not trusted"')], results)
    assert [r["status"] for r in rows] == ["PASS", "FAIL", "FAIL"]
