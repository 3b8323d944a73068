"""Issue 19, items 1, 2 and 8: the system's context in the plan, the limitations the audit writes from its own
results (with the equivalence test behind any "no difference between groups"), and a failed step that is never
silent."""

from __future__ import annotations

import re

import pytest

from conftest import plan_text
from test_report import make_artifacts, make_results
from xai_audit.audit import run_audit
from xai_audit.errors import PlanError
from xai_audit.plan import load_plan, parse_plan
from xai_audit.report.context import build_context
from xai_audit.report.render import render_html
from xai_audit.report.scope import NOT_STATED, SYSTEM_FIELDS
from xai_audit.run.cache import Cache

SYSTEM = """\
system:
  intended_purpose: Tell the expression of a face in a photo booth.
  provider: ACME Vision
  out_of_scope_uses: [medical diagnosis, hiring]
  responsible_persons:
    - {name: Ada Lovelace, role: model owner}
    - {name: Alan Turing}
"""


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# -- 1. system ---------------------------------------------------------------------------------------------


def test_system_round_trips_into_results_and_absent_fields_read_not_stated(write_plan, registry):
    plan = load_plan(write_plan(plan_text(extra=SYSTEM, n=20)), registry)
    results = run_audit(plan, registry, cache=Cache(None)).results
    system = results["system"]
    assert system["provider"] == "ACME Vision" and system["out_of_scope_uses"] == ["medical diagnosis", "hiring"]
    assert system["responsible_persons"] == [{"name": "Ada Lovelace", "role": "model owner"},
                                             {"name": "Alan Turing", "role": None}]
    assert system["intended_users"] is None and system["known_limitations"] is None  # absent: null, not invented
    assert results["plan"]["system"] == system
    text = _text(render_html(build_context(results, make_artifacts()), []))
    assert "Tell the expression of a face in a photo booth." in text and "Ada Lovelace (model owner)" in text
    absent = [label for key, label in SYSTEM_FIELDS if system[key] is None]
    assert len(absent) == 4
    for label in absent:
        assert re.search(re.escape(label) + r"\s+" + NOT_STATED, text), label
    assert "Alan Turing (role not stated)" in text


def test_a_plan_without_system_states_nothing_and_the_report_says_so(results_without_system):
    text = _text(render_html(build_context(results_without_system, make_artifacts()), []))
    assert text.count(NOT_STATED) >= len(SYSTEM_FIELDS)
    assert "The plan has no system: section" in text


@pytest.fixture
def results_without_system() -> dict:
    results = make_results()
    results["system"] = None
    return results


@pytest.mark.parametrize("section, field", [
    ("system:\n  purpose: to sort faces\n", "system.purpose"),
    ("system:\n  responsible_persons:\n    - {name: Ada, rol: owner}\n", "system.responsible_persons[0].rol"),
    ("system:\n  provider: ''\n", "system.provider"),
    ("system:\n  out_of_scope_uses: hiring\n", "system.out_of_scope_uses"),
])
def test_a_bad_system_field_is_one_line_naming_it(section, field, registry):
    with pytest.raises(PlanError) as info:
        parse_plan(plan_text(extra=section), registry, filename="plan.yaml")
    (problem,) = info.value.problems
    assert problem.startswith("plan.yaml:") and f" {field}: " in problem and "\n" not in problem


def test_an_unknown_system_key_suggests_the_field_and_the_cli_exits_2(write_plan):
    from typer.testing import CliRunner

    from xai_audit.cli import app

    plan = write_plan(plan_text(extra="system:\n  purpose: to sort faces\n"))
    result = CliRunner().invoke(app, ["validate", str(plan)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert 'system.purpose: unknown option; did you mean "intended_purpose"?' in result.output
