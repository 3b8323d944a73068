"""bench/audit_cost.py without timing: its plans are valid, its pass counter counts under the step that ran the
passes, and its tables compare each trust step's passes with its explainer's."""

from __future__ import annotations

import pytest
import torch

from bench import audit_cost


@pytest.mark.parametrize("model", audit_cost.MODELS)
def test_each_benchmark_plan_is_a_valid_plan(model, tmp_path):
    from xai_audit.plan import parse_plan
    from xai_audit.registry import make_plugin_manager

    plan = parse_plan(audit_cost.plan_text(model, quick=True), make_plugin_manager(), base_dir=tmp_path)
    assert [s.name for s in plan.explainers] == ["lime", "occlusion", "integrated-gradients", "gradcam"]
    assert plan.explain.trust.enabled and plan.explain.trust.sanity_samples is None  # the trust step's defaults
    assert plan.explainers[0].options_dict()["samples"] == 1000  # the explainers' defaults too


def test_passes_are_counted_under_the_step_that_ran_them():
    from xai_audit.run.facts import RunFacts

    module = audit_cost.counted(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)))
    audit_cost.COUNTS.clear()
    facts = RunFacts()
    x = torch.rand(5, 3, 2, 2)
    with audit_cost.counting():
        with facts.step("explainer a"):
            with torch.no_grad():
                module(x)
        with facts.step("trust a"):
            y = x.clone().requires_grad_(True)
            module(y)[:, 0].sum().backward()
            module(x[:3])  # a forward with grad enabled that no backward follows
    assert audit_cost.COUNTS == {"explainer a": [5, 0], "trust a": [8, 5]}
    assert RunFacts.step.__name__ == "step"  # put back after counting


def test_the_tables_compare_each_trust_step_with_its_explainer():
    run = {"model": "demo", "shape": (3, 64, 64), "unit": {False: 0.001, True: 0.003}, "seconds": 10.0,
           "failures": [], "uncounted": {},
           "trust_budget": {"lime": {"mode": "explainer", "images": 8, "of": 8, "steps": 12, "sanity_samples": 2,
                                     "sanity_stages": 1, "passes": 2200, "explainer_passes": 4000}},
           "rows": [{"step": "explainer lime", "seconds": 4.0, "forward": 4000, "backward": 0, "limit": 4.0},
                    {"step": "trust lime", "seconds": 3.0, "forward": 2200, "backward": 0, "limit": 2.2},
                    {"step": "explainer gradcam", "seconds": 0.1, "forward": 8, "backward": 8, "limit": 0.024},
                    {"step": "trust gradcam", "seconds": 1.0, "forward": 208, "backward": 0, "limit": 0.208}]}
    rows, sections = audit_cost.results([run])
    by_what = {r.what.split(" (")[0]: r for r in rows}
    assert by_what["whole audit"].ratio == pytest.approx((4.0 + 2.2 + 0.024 + 0.208) / 10.0)
    lime, gradcam = by_what["trust ÷ lime"], by_what["trust ÷ gradcam"]
    assert lime.ratio == pytest.approx(4.0 / 2.2) and lime.met is True and lime.bar == 1.0
    assert gradcam.met is False and gradcam.bar == 1.0  # every explainer's trust step within it, Grad-CAM's too
    assert "passes 0.08" in gradcam.what  # counted: (8 + 8) / 208
    assert "curves on 8 of 8 images at 12 steps" in " ".join(sections[0].notes)
    assert sections[0].rows[-1][0] == "whole audit" and sections[0].rows[-1][2] == str(4000 + 2200 + 8 + 208)
    slow = dict(run, rows=[dict(run["rows"][0]), dict(run["rows"][1], limit=5.0)])
    assert next(r for r in audit_cost.results([slow])[0] if r.what.startswith("trust ÷ lime")).met is False
