"""Several models in one plan, and `xai-audit compare` from earlier results."""

from __future__ import annotations

import json
import textwrap

import torch
from typer.testing import CliRunner

from conftest import EMOTIONS, TINY_MODEL
from xai_audit.cli import app
from xai_audit.judge.compare import compare_results

runner = CliRunner()


def _two_model_plan(model_dir):
    namespace: dict = {}
    exec(TINY_MODEL, namespace)
    torch.manual_seed(1)
    torch.save(namespace["make"]().state_dict(), model_dir / "weights_b.pt")
    classes = ", ".join(EMOTIONS)
    text = textwrap.dedent(
        f"""\
        seed: 2
        models:
          - {{name: first, adapter: torch, module: tiny_model.py:make, weights: weights.pt, classes: [{classes}]}}
          - {{name: second, adapter: torch, module: tiny_model.py:make, weights: weights_b.pt, classes: [{classes}]}}
        dataset: {{loader: synthetic-faces, n: 28, size: 32}}
        explain: {{samples: 3}}
        explainers:
          - integrated-gradients: {{steps: 3}}
        hypotheses:
          - grayscale
        """
    )
    (model_dir / "two.yaml").write_text(text)
    return model_dir / "two.yaml"


def test_two_model_plan_renders_both_reports_and_the_comparison(model_dir, tmp_path):
    plan = _two_model_plan(model_dir)
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(plan), "--out", str(out), "--no-cache", "-q"])
    assert result.exit_code == 0, result.output
    for name in ("first", "second"):
        assert (out / name / "report.html").is_file() and (out / name / "results.json").is_file()
    comparison = json.loads((out / "comparison.json").read_text())
    assert [m["name"] for m in comparison["models"]] == ["first", "second"]
    (pair,) = comparison["pairs"]
    assert pair["n_common"] == 28 and pair["p_value_adjusted"] is not None
    assert comparison["hypotheses"][0]["step"] == "grayscale"
    (effect,) = comparison["effect_pairs"]  # grayscale's effect, paired image by image between the models
    assert effect["step"] == "grayscale" and effect["n_common"] == 28 and effect["p_value_adjusted"] is not None
    first = json.loads((out / "first" / "results.json").read_text())
    second = json.loads((out / "second" / "results.json").read_text())
    # the same images are explained under both models
    assert first["explainers"]["integrated-gradients"]["sample_ids"] == second["explainers"]["integrated-gradients"]["sample_ids"]
    html = (out / "comparison.html").read_text()
    assert "hurt one model more than the other" in html
    assert "Paired tests between the models" in html and "The same images, explained by each model" in html
    assert html.count("data:image/png;base64,") >= 2  # accuracy chart and the side-by-side heatmaps
    assert (out / "comparison.pdf").stat().st_size > 1000


def test_compare_command_from_results_files(model_dir, tmp_path):
    plan = _two_model_plan(model_dir)
    out = tmp_path / "out"
    assert runner.invoke(app, ["run", str(plan), "--out", str(out), "--no-cache", "-q"]).exit_code == 0
    result = runner.invoke(app, ["compare", str(out / "first" / "results.json"), str(out / "second" / "results.json"),
                                 "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    comparison = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert comparison == json.loads((out / "comparison.json").read_text()) | {"title": comparison["title"]}
    assert "hold no attribution maps" in (tmp_path / "cmp" / "comparison.html").read_text()


def test_compare_rejects_bad_input(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    result = runner.invoke(app, ["compare", str(bad), str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "not an xai-audit results.json" in result.stderr


def test_paired_test_finds_a_real_difference():
    def results(name, correct):
        return {
            "schema_version": "1.0",
            "provenance": {"model": {"adapter": "torch", "fingerprint": name * 12}, "dataset": {"fingerprint": "d"}},
            "samples": {"n": len(correct)},
            "accuracy": {"value": sum(correct) / len(correct), "ci": [0, 1]},
            "per_sample": {"ids": [f"s{i}" for i in range(len(correct))], "labels": [0] * len(correct),
                           "predictions": [0 if c else 1 for c in correct]},
        }

    good = results("a", [True] * 90 + [False] * 10)
    bad = results("b", [True] * 50 + [False] * 50)
    (pair,) = compare_results([("good", good), ("bad", bad)])["pairs"]
    assert pair["difference"] == 0.4 and pair["p_value"] < 1e-6 and pair["verdict"] == "different"
    assert pair["ci"][0] > 0.25
    (same,) = compare_results([("good", good), ("again", good)])["pairs"]
    assert same["verdict"] == "no significant difference" and same["difference"] == 0


def test_hypothesis_effects_are_paired_image_by_image_between_models():
    n = 120
    ids = [f"s{i}" for i in range(n)]

    def results(name, after_correct):
        # both models are right on every clean image; the intervention breaks some of them
        return {
            "schema_version": "1.0",
            "provenance": {"model": {"adapter": "torch", "fingerprint": name * 12}, "dataset": {"fingerprint": "d"}},
            "samples": {"n": n},
            "accuracy": {"value": 1.0, "ci": [0.97, 1]},
            "per_sample": {"ids": ids, "labels": [0] * n, "predictions": [0] * n},
            "hypotheses": {"darken": {"status": "ok", "plugin": "luminance", "per_sample": {
                "ids": ids, "predictions_after": [0 if ok else 1 for ok in after_correct]}}},
        }

    fragile = results("a", [i % 2 == 0 for i in range(n)])  # loses half its images in the dark
    sturdy = results("b", [i % 10 != 0 for i in range(n)])  # loses one in ten
    comparison = compare_results([("fragile", fragile), ("sturdy", sturdy)], seed=1)
    (row,) = comparison["effect_pairs"]
    assert row["step"] == "darken" and row["n_common"] == n and row["metric"] == "accuracy drop"
    assert abs(row["difference"] - 0.4) < 1e-9 and row["ci"][0] > 0.25
    assert row["p_value"] < 0.001 and row["verdict"] == "different"
    # Holm counts the accuracy pair and the effect pair together
    assert row["p_value_adjusted"] >= row["p_value"]
    (same,) = compare_results([("fragile", fragile), ("again", fragile)])["effect_pairs"]
    assert same["difference"] == 0 and same["verdict"] == "no significant difference"


def _fake_results(name, classes, predictions, labels):
    ids = [f"s{i}" for i in range(len(predictions))]
    return {
        "schema_version": "2.0",
        "provenance": {"model": {"adapter": "torch", "fingerprint": name * 12}, "dataset": {"fingerprint": "d"}},
        "classes": classes,
        "samples": {"n": len(ids)},
        "accuracy": {"value": 0.5, "ci": [0.2, 0.8]},
        "per_sample": {"ids": ids, "labels": labels, "predictions": predictions},
        "explainers": {"integrated-gradients": {"status": "ok"}},
        "hypotheses": {"darken": {"status": "ok", "plugin": "luminance", "per_sample": {
            "ids": ids, "predictions_after": [(p + (i % 2)) % len(classes) for i, p in enumerate(predictions)]}}},
    }


def test_models_of_different_label_spaces_keep_their_own_classes(monkeypatch):
    import numpy as np

    from xai_audit.contract.types import Explanation
    from xai_audit.report import ReportArtifacts
    from xai_audit.report import comparison as comparison_page
    from xai_audit.report.comparison import build_comparison_context
    from xai_audit.report.render import render_html

    n = 6
    digits = _fake_results("d", [str(d) for d in range(10)], [7] * n, [0] * n)
    faces = _fake_results("f", EMOTIONS, [1] * n, [0] * n)  # index 1: "sad" for this model, "1" for the other
    comparison = compare_results([("digits", digits), ("faces", faces)])
    assert [m["classes"] for m in comparison["models"]] == [digits["classes"], EMOTIONS]
    assert comparison["same_classes"] is False and comparison["classes"] == []
    (pair,) = comparison["pairs"]  # right or wrong is not one question for both: no paired accuracy test
    assert pair["p_value"] is None and pair["verdict"] == "not tested" and "different classes" in pair["test"]
    (effect,) = comparison["effect_pairs"]  # labels mean different things: the flip rate, which needs none
    assert effect["metric"] == "flip rate" and abs(effect["effect_a"] - 0.5) < 1e-9

    ids = [f"s{i}" for i in range(n)]
    rng = np.random.default_rng(0)
    artifacts = {
        name: ReportArtifacts(
            images={sid: rng.random((3, 8, 8), dtype=np.float32) for sid in ids},
            explanations={"integrated-gradients": Explanation(method="integrated-gradients", signed=True,
                                                              maps=rng.random((n, 8, 8)).astype(np.float32),
                                                              sample_ids=ids, targets=np.full(n, pred))},
            predictions={sid: (pred, 0.9) for sid in ids}, labels={sid: 0 for sid in ids})
        for name, pred in (("digits", 7), ("faces", 1))
    }
    titles = []
    monkeypatch.setattr(comparison_page.figures, "explanation_grid",
                        lambda images, overlays, row_titles, signed: titles.extend(row_titles) or "data:,")
    context = build_comparison_context(comparison, artifacts)
    assert len(context["heatmaps"]) == 1
    # each prediction named with its own model's classes: faces' index 1 is "sad", never digits' "1"
    assert titles == [f"{sid}\ndigits: 7 (0.90), faces: sad (0.90)" for sid in ids]
    html = render_html(context, page="compare.html")
    assert "10: 0, 1, 2, 3, 4, 5, …" in html and "7: happy, sad" in html
    assert "the models name different classes" in html

    same = compare_results([("digits", digits), ("again", digits)])
    assert same["same_classes"] is True and same["classes"] == digits["classes"]
    assert same["pairs"][0]["p_value"] is not None
