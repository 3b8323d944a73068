"""Issue 19, items 1, 2 and 8: the system's context in the plan, the limitations the audit writes from its own
results (with the equivalence test behind any "no difference between groups"), and a failed step that is never
silent."""

from __future__ import annotations

import re

import numpy as np
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
    _validate(results)
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


# -- 2. limitations, and equivalence behind "no difference" --------------------------------------------------


def _validate(results: dict) -> None:
    """results.json as written (strict JSON) against the shipped JSON Schema."""
    import json
    from importlib.resources import files

    import jsonschema

    schema = json.loads(files("xai_audit.schema").joinpath("results.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(json.loads(json.dumps(results, allow_nan=False)))


def _resolve(results: dict, source: str):
    """The value at a limitation's ``source`` path: dotted keys (a key may hold spaces), ``[i]`` list indices."""
    node = results
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", source):
        if part.startswith("["):
            node = node[int(part[1:-1])]
        else:
            node = node[part]
    return node


def test_tost_declares_equivalence_with_power_on_large_groups():
    from scipy import stats

    from xai_audit.api import equivalence_test

    k1, n1, k2, n2, margin = 900, 1000, 905, 1000, 0.05
    result = equivalence_test(k1, n1, k2, n2, margin)
    p1, p2 = (k1 + 1) / (n1 + 2), (k2 + 1) / (n2 + 2)
    se = ((p1 * (1 - p1)) / (n1 + 2) + (p2 * (1 - p2)) / (n2 + 2)) ** 0.5
    expected_p = max(stats.norm.sf((p1 - p2 + margin) / se), stats.norm.cdf((p1 - p2 - margin) / se))
    assert result["p_value"] == pytest.approx(expected_p, rel=1e-9) and result["p_value"] < 0.001
    assert result["equivalent"] and result["difference"] == pytest.approx(-0.005)
    assert -margin < result["ci"][0] < result["ci"][1] < margin
    assert 0.9 < result["power"] < 1
    # the power is what it says: the share of data sets with no true difference in which TOST declares equivalence
    rng = np.random.default_rng(0)
    a, b = rng.binomial(n1, 0.9025, 4000), rng.binomial(n2, 0.9025, 4000)
    declared = np.mean([equivalence_test(int(x), n1, int(y), n2, margin)["equivalent"] for x, y in zip(a, b)])
    assert declared == pytest.approx(result["power"], abs=0.03)


def test_tost_on_small_groups_cannot_tell_and_says_how_little_power_it_had():
    from xai_audit.api import equivalence_test

    result = equivalence_test(18, 20, 18, 20, 0.05)  # the same accuracy, and still not shown equivalent
    assert not result["equivalent"] and result["p_value"] > 0.2 and result["power"] == 0.0
    wide = equivalence_test(18, 20, 18, 20, 0.4)  # a margin wide enough for 20 images
    assert wide["equivalent"] and wide["power"] > 0.8
    with pytest.raises(ValueError):
        equivalence_test(1, 0, 1, 2, 0.05)


class _Exploding:
    """A registry with an explainer that raises (as tests/test_runner.py)."""

    @staticmethod
    def registry():
        import types

        from xai_audit import hookimpl
        from xai_audit.contract.types import ExplainerPlugin
        from xai_audit.registry import make_plugin_manager

        class ExplodingExplainer(ExplainerPlugin):
            name = "exploding-explainer"

            def explain(self, model, samples, targets, seed):
                raise ValueError("explainer broke")

        module = types.ModuleType("failing_explainer")
        module.register_explainers = hookimpl(lambda: [ExplodingExplainer])
        return make_plugin_manager(extra_plugins=[module])


GROUPS = "  - group-accuracy: {by: [skin_tone], min_group_size: 6}\n"


def test_limitations_name_the_failed_step_the_small_groups_and_what_the_data_cannot_tell(write_plan):
    registry = _Exploding.registry()
    plan = load_plan(write_plan(plan_text("  - exploding-explainer\n", GROUPS, n=40)), registry)
    results = run_audit(plan, registry, cache=Cache(None)).results
    _validate(results)
    kinds = {}
    for entry in results["limitations"]:
        assert set(entry) == {"kind", "subject", "text", "source"} and entry["text"]
        _resolve(results, entry["source"])  # every source is a real path in results.json
        kinds.setdefault(entry["kind"], []).append(entry)
    (failed,) = kinds["not run"]
    assert failed["subject"] == "explainer exploding-explainer" and "ValueError: explainer broke" in failed["text"]
    assert _resolve(results, failed["source"])["step"] == "explainer exploding-explainer"
    rows = results["hypotheses"]["group-accuracy"]["breakdown"]["skin_tone"]
    small = [r["group"] for r in rows if r["too small"]]
    assert small and all(f"{g} (n = " in kinds["too small"][0]["text"] for g in small)
    # 40 images: no group can be shown equal within 5 points, and the report must not say they are
    equivalence = results["hypotheses"]["group-accuracy"]["details"]["equivalence"]
    assert equivalence["equivalent"] is False and equivalence["margin"] == 0.05
    (cannot,) = kinds["cannot tell"]
    assert cannot["text"].startswith("The data cannot tell") and "power" in cannot["text"]
    html = _text(render_html(build_context(results, make_artifacts()), []))
    assert "What this audit could not establish" in html and "The data cannot tell" in html
    assert not re.search(r"\bno (bias|effect|difference)\b", html, re.IGNORECASE)


def test_an_unlabelled_data_set_and_an_estimated_group_are_limitations(model_dir, registry):
    from conftest import EMOTIONS
    from PIL import Image

    tmp_path = model_dir  # tiny_model.py and weights.pt
    (tmp_path / "data").mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        skin = np.array([224, 172, 105]) * (0.5 + 0.06 * i)  # skin-like colours, lighter image by image
        pixels = np.clip(skin + rng.normal(0, 6, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / "data" / f"face{i}.png")
    (tmp_path / "data" / "meta.csv").write_text("path,label\n" + "".join(f"face{i}.png,\n" for i in range(8)))
    (tmp_path / "plan.yaml").write_text(
        f"model: {{adapter: torch, module: tiny_model.py:make, weights: weights.pt, classes: {EMOTIONS}}}\n"
        "dataset: {loader: image-folder, path: data, metadata: data/meta.csv, size: 32}\n"
        "hypotheses:\n  - group-accuracy: {by: [skin_tone_estimate], min_group_size: 2}\n"
    )
    results = run_audit(load_plan(tmp_path / "plan.yaml", registry), registry, cache=Cache(None)).results
    kinds = {e["kind"]: e for e in results["limitations"]}
    assert kinds["no labels"]["source"] == "samples.labelled" and results["samples"]["labelled"] is False
    assert "estimate" in kinds["estimate"]["text"] and "ITA" in kinds["estimate"]["subject"]
    assert _resolve(results, kinds["estimate"]["source"]) == ["skin tone (ITA estimate)"]
    assert "not run" not in kinds and results["completeness"]["not_run"] == []
    for entry in results["limitations"]:
        _resolve(results, entry["source"])


def test_a_hypothesis_the_data_cannot_take_is_a_limitation_with_its_reason():
    from xai_audit.judge.limitations import derive_limitations

    reason = "every image reaches the model as one channel, so a grayscale copy is the same input"
    results = {"samples": {"labelled": True}, "hypotheses": {"grayscale": {
        "status": "ok", "plugin": "grayscale", "verdict": "not applicable", "details": {"reason": reason}, "tests": []}}}
    (entry,) = derive_limitations(results)
    assert entry == {"kind": "not applicable", "subject": "grayscale", "source": "hypotheses.grayscale",
                     "text": f"grayscale could not be tested: {reason}."}


# -- 8. a failed step is never silent --------------------------------------------------------------------------

BROKEN = "  - grayscale\n  - transform: {callable: 'json:loads', description: parsed as JSON}\n"  # raises TypeError


def _html_only(text: str) -> str:
    """A plan that writes no PDF (WeasyPrint takes seconds, and nothing here reads the PDF)."""
    return text.replace("report: {title: Test audit}", "report: {title: Test audit, formats: [html, json]}")


def _cli(*args: str):
    from typer.testing import CliRunner

    from xai_audit.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("mode, status", [("", 1), ("on_step_failure: fail\n", 1), ("on_step_failure: warn\n", 0)])
def test_a_planned_step_that_did_not_run_sets_the_exit_status_after_the_whole_report(write_plan, tmp_path, mode,
                                                                                      status):
    import json

    plan = write_plan(_html_only(plan_text(hypotheses=BROKEN, extra=mode, n=20)))
    out = tmp_path / "report"
    result = _cli("run", str(plan), "--out", str(out), "--no-cache", "-q")
    assert result.exit_code == status, result.output
    assert "INCOMPLETE: 1 planned step(s) did not run: hypothesis transform" in result.stderr
    assert "Traceback" not in result.output
    results = json.loads((out / "results.json").read_text())  # nothing lost: the report is whole
    assert results["completeness"]["on_step_failure"] == (mode.split(": ")[1].strip() if mode else "fail")
    assert [r["step"] for r in results["completeness"]["not_run"]] == ["hypothesis transform"]
    assert results["hypotheses"]["grayscale"]["status"] == "ok"
    html = _text((out / "report.html").read_text())
    assert "INCOMPLETE: 1 planned step did not run: hypothesis transform" in html
    assert "No significant finding" not in html  # the verdict never reads as clean


def test_a_clean_run_exits_0_with_no_banner(write_plan, tmp_path):
    import json

    out = tmp_path / "report"
    plan = write_plan(_html_only(plan_text(hypotheses="  - grayscale\n", n=20)))
    result = _cli("run", str(plan), "--out", str(out), "--no-cache", "-q")
    assert result.exit_code == 0, result.output
    assert "INCOMPLETE" not in result.output and "INCOMPLETE" not in (out / "report.html").read_text()
    assert json.loads((out / "results.json").read_text())["completeness"]["not_run"] == []


def test_the_verdict_is_never_clean_when_a_planned_step_is_missing():
    results = make_results()
    results.update(findings=[], checks=[], failures=[], completeness={"on_step_failure": "warn", "planned": 2,
                                                                      "not_run": []})
    assert build_context(results, make_artifacts())["verdict"]["level"] == "ok"
    results["completeness"]["not_run"] = [{"step": "explainer lime", "reason": "ValueError: x",
                                           "source": "failures[0]"}]
    verdict = build_context(results, make_artifacts())["verdict"]
    assert verdict["level"] != "ok" and verdict["incomplete"]["label"] == "INCOMPLETE: 1 planned step did not run"
    assert "on_step_failure: warn" in verdict["incomplete"]["text"]


def test_on_step_failure_takes_fail_or_warn_only(registry):
    with pytest.raises(PlanError) as info:
        parse_plan(plan_text(extra="on_step_failure: ignore\n"), registry, filename="plan.yaml")
    (problem,) = info.value.problems
    assert " on_step_failure: " in problem and "'fail'" in problem and "'warn'" in problem
