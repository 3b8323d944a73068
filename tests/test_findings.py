"""From results to findings, recommendations and the manifest; through the runner and the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

import fake_audit as fa
from conftest import plan_text
from xai_audit.run.cache import Cache
from xai_audit.cli import app
from xai_audit.judge.findings import derive_findings
from xai_audit.plan import load_plan
from xai_audit.judge.recommend import MANIFEST_NAME, manifest_csv, recommend, write_manifest
from xai_audit.audit import run_audit
from xai_audit.judge.correction import correct_for_multiple_tests as _correct_for_multiple_tests
from xai_audit.run.steps import result_dict as _result_dict
from xai_audit.api import HypothesisPlugin
from xai_audit_hypotheses.groups import GroupAccuracyHypothesis
from xai_audit_hypotheses.luminance import LuminanceHypothesis
from xai_audit_hypotheses.occlusion import OccludeRegionsHypothesis


def entry(result, plugin: str, options=None) -> dict:
    return {"status": "ok", "plugin": plugin, "options": options or {}, **_result_dict(result)}


def test_holm_counts_every_further_test_and_downgrades_verdicts():
    hypotheses = {
        "a": {"status": "ok", "p_value": 0.01, "verdict": "supported",
              "tests": [{"name": "t1", "p_value": 0.02, "verdict": "supported"},
                        {"name": "t2", "p_value": 0.5, "verdict": "not supported"}]},
        "b": {"status": "ok", "p_value": 0.04, "verdict": "supported", "tests": []},
        "c": {"status": "failed"},
    }
    assert _correct_for_multiple_tests(hypotheses) == 4
    assert hypotheses["a"]["p_value_adjusted"] == pytest.approx(0.04)  # 4 x 0.01
    assert hypotheses["a"]["tests"][0]["p_value_adjusted"] == pytest.approx(0.06)  # 3 x 0.02
    assert hypotheses["a"]["tests"][0]["verdict"] == "not supported"
    assert "not after Holm" in hypotheses["a"]["tests"][0]["details"]["note"]
    assert hypotheses["b"]["verdict"] == "not supported"  # 0.04 -> max(0.06, 2 x 0.04)
    assert hypotheses["c"]["p_value_adjusted"] is None


def _demo_like_results():
    samples = fa.make_samples(240, groups=lambda i: {"tone": "dark" if i % 3 == 0 else "light"})
    ctx = fa.context(samples, fa.shortcut)
    probs = ctx.probs.copy()
    probs[::6] = np.roll(probs[::6], 1, axis=1)  # wrong (confidently) on half the dark faces
    ctx.probs = probs
    plugins = {
        "luminance": LuminanceHypothesis(LuminanceHypothesis.Options(factor=0.2)),
        "group-accuracy": GroupAccuracyHypothesis(GroupAccuracyHypothesis.Options(by=["tone"])),
        "occlude-regions": OccludeRegionsHypothesis(OccludeRegionsHypothesis.Options(
            regions=["mouth", "hair"], label_regions=["mouth"])),
    }
    options = {"luminance": {"factor": 0.2}, "occlude-regions": {"regions": ["mouth", "hair"], "fill": "mean"}}
    hyps = {name: entry(plugin.test(ctx), name, *([options[name]] if name in options else []))
            for name, plugin in plugins.items()}
    _correct_for_multiple_tests(hyps)
    preds = probs.argmax(axis=1)
    results = {
        "classes": fa.CLASSES,
        "hypotheses": hyps,
        "per_sample": {"ids": [s.id for s in samples], "labels": [s.label for s in samples],
                       "predictions": preds.tolist(), "confidence": probs.max(axis=1).tolist()},
    }
    results["findings"] = derive_findings(results)
    return results, samples, plugins


def test_findings_are_ranked_shortcut_then_bias_then_reliance():
    results, _, _ = _demo_like_results()
    findings = results["findings"]
    assert [f["kind"] for f in findings] == ["shortcut", "bias", "reliance"]
    assert [f["rank"] for f in findings] == [1, 2, 3]
    assert findings[0]["class"] == "sad" and findings[0]["source"] == "hypotheses.luminance / shortcut"
    assert findings[1]["group"] == {"column": "tone", "worst": "dark", "best": "light"}
    assert findings[2]["severity"] == "info"
    for f in findings:
        assert f["p_value_adjusted"] < 0.05 and f["detail"] and f["title"]


def test_recommendations_turn_findings_into_data():
    results, samples, plugins = _demo_like_results()
    rows = recommend(results, samples, plugins)
    actions = [r["action"] for r in rows]
    assert actions[0] == "augment" and json.loads(rows[0]["augmentation"]) == {"transform": "luminance", "factor": [0.2, 1.0]}
    assert rows[0]["kind"] == "shortcut" and "stops predicting 'sad'" in rows[0]["reason"]
    group = next(r for r in rows if r["action"] == "add-group")
    assert group["group"] == "tone=dark" and group["count"] > 0
    hard = [r for r in rows if r["action"] == "relabel-or-add"]
    assert len(hard) == 20  # 40 wrong and confident; at most 20 listed
    assert all(r["sample_id"] for r in hard) and "with 90 % confidence" in hard[0]["reason"]
    assert [r["priority"] for r in rows] == list(range(1, len(rows) + 1))
    # reliance on the mouth (which carries the label) is no reason to train on occluded mouths
    assert not any(json.loads(r["augmentation"])["transform"] == "occlude" for r in rows if r["action"] == "augment")


def test_manifest_is_csv_written_atomically(tmp_path):
    results, samples, plugins = _demo_like_results()
    rows = recommend(results, samples, plugins)
    path = write_manifest(rows, tmp_path)
    assert path.name == MANIFEST_NAME and not list(tmp_path.glob(".finetune_manifest*"))
    assert path.stat().st_mode & 0o777 == 0o644  # readable like the report beside it
    read = list(csv.DictReader(path.open()))
    assert len(read) == len(rows) and read[0]["action"] == "augment"
    assert manifest_csv([]).strip() == "priority,action,kind,sample_id,group,augmentation,fraction,count,reason,finding"


HYPS = (
    "  - luminance: {factor: 0.2}\n"
    "  - grayscale\n"
    "  - occlude-regions: {regions: [eyes, mouth, hair, lower_face], label_regions: [eyes, mouth, lower_face]}\n"
    "  - mask-lower-face\n"
    "  - background: {mode: darken}\n"
    "  - group-accuracy: {by: [skin_tone], min_group_size: 2}\n"
)


def test_the_runner_carries_tests_findings_and_recommendations(write_plan, registry):
    plan = load_plan(write_plan(plan_text(hypotheses=HYPS)), registry)
    outcome = run_audit(plan, registry, cache=Cache(None))
    r = outcome.results
    assert r["failures"] == []
    assert r["multiple_testing"]["method"] == "holm"
    n_tests = sum(1 + len(h["tests"]) for h in r["hypotheses"].values() if h.get("p_value") is not None)
    assert r["multiple_testing"]["n_tests"] == n_tests
    lum = r["hypotheses"]["luminance"]
    assert lum["kind"] == "fragility" and lum["tests"][0]["kind"] == "shortcut"
    assert lum["tests"][0]["p_value_adjusted"] is not None
    assert r["hypotheses"]["group-accuracy"]["kind"] == "bias"
    assert isinstance(r["recommendations"], list)
    json.dumps(r, allow_nan=False)
    assert outcome.hypotheses["luminance"].arrays["examples"].shape[-1] == 32


def test_cli_run_writes_the_manifest_beside_the_report(write_plan):
    path = write_plan(plan_text(hypotheses="  - luminance: {factor: 0.2}\n"
                                "  - group-accuracy: {by: [skin_tone], min_group_size: 2}\n"))
    out = path.parent / "out"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--no-cache", "--quiet"])
    assert result.exit_code in (0, 1), result.output
    assert (out / MANIFEST_NAME).exists() and "manifest:" in result.output
    html = (out / "report.html").read_text()
    assert "Recommended fine-tuning data" in html


def test_the_same_claim_from_two_steps_is_one_finding():
    from xai_audit.judge.findings import derive_findings

    entry = {"status": "ok", "plugin": "occlude-regions", "kind": "reliance", "claim": "The model's accuracy drops when the mouth is occluded.",
             "metric": "accuracy", "before": 0.9, "after": 0.6, "effect": 0.3, "ci": [0.25, 0.35], "p_value": 1e-9,
             "p_value_adjusted": 1e-8, "verdict": "supported", "n": 500, "test": "McNemar"}
    results = {"hypotheses": {"occlude-regions": dict(entry), "occlude-regions-from-topology": dict(entry)}}
    (finding,) = derive_findings(results)
    assert finding["source"] == "hypotheses.occlude-regions"
    assert finding["also_found_by"] == ["hypotheses.occlude-regions-from-topology"]


class _Posterise(HypothesisPlugin):
    """A third-party intervention that says which augmentation undoes its finding."""

    name = "posterise"

    def test(self, context):  # pragma: no cover - not run here
        raise NotImplementedError

    def augmentation(self, finding, result):
        return {"transform": "posterise", "levels": result["options"]["levels"]}


class _Broken(_Posterise):
    name = "broken"

    def recommend(self, finding, result):
        raise RuntimeError("no idea")


def test_a_plugin_hypothesis_recommends_data_through_its_hook():
    finding = {"hypothesis": "poster", "kind": "shortcut", "title": "Posterised faces read as sad.", "class": "sad",
               "source": "hypotheses.poster / shortcut"}
    results = {"hypotheses": {"poster": {"status": "ok", "plugin": "posterise", "options": {"levels": 4}},
                              "other": {"status": "ok", "plugin": "broken", "options": {"levels": 2}}},
               "findings": [finding, {**finding, "hypothesis": "other"}]}
    failures: list = []
    rows = recommend(results, [], {"poster": _Posterise(), "other": _Broken()}, failures)
    assert [r["action"] for r in rows] == ["augment"]
    assert json.loads(rows[0]["augmentation"]) == {"transform": "posterise", "levels": 4}
    assert rows[0]["finding"] == "hypotheses.poster / shortcut" and "stops predicting 'sad'" in rows[0]["reason"]
    assert failures and failures[0]["step"] == "recommendations of hypothesis other" and "no idea" in failures[0]["error"]


def test_recommend_knows_no_hypothesis_by_name():
    from pathlib import Path

    import xai_audit.judge.recommend as module

    source = Path(module.__file__).read_text()
    for name in ("luminance", "grayscale", "occlude-regions", "mask-lower-face", "group-accuracy", "dataset-shift",
                 "background"):
        assert f'"{name}"' not in source, name
