"""The robustness plugins (plugins/xai_audit_robustness) on hand-built contexts whose truth is known exactly."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import fake_audit as fa
from xai_audit.api import Dataset, HypothesisContext, ModelAdapter, Sample
from xai_audit.errors import DataError, ModelError
from xai_audit.judge.checks import evaluate_checks
from xai_audit.judge.correction import correct_for_multiple_tests
from xai_audit.judge.findings import derive_findings
from xai_audit.judge.recommend import recommend
from xai_audit.plan.checks import parse_check
from xai_audit.run.steps import result_dict
from xai_audit_robustness.adversarial import AdversarialHypothesis
from xai_audit_robustness.calibration import CalibrationHypothesis
from xai_audit_robustness.corruptions import CorruptionsHypothesis, corrupt
from xai_audit_robustness.data_checks import DataChecksHypothesis

from conftest import plan_text


def run(plugin_cls, ctx, **options):
    plugin = plugin_cls(plugin_cls.Options(**options))
    return plugin, plugin.test(ctx)


def audit(**results):
    """Results as the runner holds them: Holm across every test, then findings."""
    hypotheses = {name: {"status": "ok", "plugin": name, "options": {}, **result_dict(r)} for name, r in results.items()}
    correct_for_multiple_tests(hypotheses)
    return {"hypotheses": hypotheses, "findings": derive_findings({"hypotheses": hypotheses})}


def gate(results, text):
    (row,) = evaluate_checks([parse_check(text)], results)
    return row["status"]


class ListDataset(Dataset):
    def __init__(self, samples, classes=fa.CLASSES):
        self.samples = list(samples)
        self.classes = list(classes)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index]

    def fingerprint(self):
        return "list"


# --------------------------------------------------------------------------- corruptions


def noise_is_sad(images: np.ndarray) -> np.ndarray:
    """Reads the class, but a noisy image is "sad" whatever it shows (the face rows are flat when clean)."""
    noisy = images[:, 0, 2:6, :7].std(axis=(1, 2)) > 0.03
    return fa.one_hot(np.where(noisy, fa.SAD, fa.read_code(images)))


def test_a_corruption_that_drains_predictions_into_one_class_is_a_shortcut():
    ctx = fa.context(fa.make_samples(80, groups=lambda i: {"site": "a" if i % 2 else "b"}), noise_is_sad)
    plugin, result = run(CorruptionsHypothesis, ctx, corruptions=["gaussian_noise", "contrast"], severities=[1, 3])
    tests = {t["name"]: t for t in result.tests}
    assert tests["gaussian_noise"]["verdict"] == "supported" and tests["gaussian_noise"]["kind"] == "fragility"
    assert tests["gaussian_noise"]["effect"] == pytest.approx(0.75)  # only the sad images stay right
    shortcut = tests["shortcut: gaussian_noise"]
    assert shortcut["kind"] == "shortcut" and shortcut["explains"] == "gaussian_noise"
    assert shortcut["verdict"] == "supported" and shortcut["details"]["class"] == "sad"
    assert tests["contrast"]["verdict"] == "not supported"
    assert result.verdict == "supported" and result.metric == "accuracy"
    lo, hi = result.ci
    assert lo <= result.effect <= hi
    # per severity: Wilson intervals and the paired test; per class, per group, the worst first
    rows = result.breakdown["per severity"]
    assert len(rows) == 4 and all(r["ci"][0] <= r["accuracy"] <= r["ci"][1] for r in rows)
    assert result.breakdown["worst corruptions"][0]["corruption"] == "gaussian_noise"
    assert {r["class"] for r in result.breakdown["per class"]} == set(fa.CLASSES)
    assert "per group: site" in result.breakdown
    assert result.details["mce"] == pytest.approx(0.375) and result.details["relative_mce"] is None  # clean error 0
    assert any("smaller than the 32 px" in w for w in result.warnings)
    assert [f["kind"] for f in result.figures] == ["lines", "bars", "images"]
    assert result.arrays["corrupted"].shape[0] == 2 * 3
    findings = audit(corruptions=result)["findings"]
    assert findings[0]["kind"] == "shortcut" and findings[0]["class"] == "sad"
    spec = plugin.augmentation(findings[0], result_dict(result))
    assert spec["names"] == ["gaussian_noise"] and spec["severity"] == [1, 3]


def test_corruptions_are_seeded_per_image_and_unlabelled_data_use_agreement():
    samples = fa.make_samples(12, labelled=False)
    images = np.stack([s.image for s in samples])
    ids = [s.id for s in samples]
    a = corrupt(images, ids, "gaussian_noise", 2, seed=0)
    b = corrupt(images[5:], ids[5:], "gaussian_noise", 2, seed=0)
    assert np.array_equal(a[5:], b) and not np.array_equal(a, corrupt(images, ids, "gaussian_noise", 2, seed=1))
    ctx = fa.context(samples, noise_is_sad)
    _, result = run(CorruptionsHypothesis, ctx, corruptions=["gaussian_noise"], severities=[2],
                    test_each_severity=True)
    assert result.metric.startswith("flip rate") and "agreement" in result.claim
    assert {t["name"] for t in result.tests} == {"gaussian_noise", "shortcut: gaussian_noise", "gaussian_noise @ 2"}


def test_unknown_corruption_and_severity_are_refused():
    with pytest.raises(ValueError, match="unknown corruption"):
        CorruptionsHypothesis.Options(corruptions=["rain"])
    with pytest.raises(ValueError, match="severities"):
        CorruptionsHypothesis.Options(severities=[0, 6])


def test_each_corruption_and_severity_is_cached_so_a_plan_that_adds_one_computes_only_that_one(registry, tmp_path):
    from xai_audit.plan import Step
    from xai_audit.run.cache import Cache
    from xai_audit.run.serialize import to_jsonable
    from xai_audit.run.steps import test_hypothesis

    samples = fa.make_samples(24, groups=lambda i: {"site": "a" if i % 2 else "b"})
    predicted: list[int] = []

    def counting(images):
        predicted.append(len(images))
        return noise_is_sad(images)

    info = registry.get("hypothesis", "corruptions")
    cache, base_key = Cache(tmp_path / "cache"), {"model": "noise-is-sad", "data": "fake", "ids": "24", "seed": 0}

    def step(**options):
        return Step("hypothesis", "corruptions", info, info.cls.Options(**options))

    def images_through_the_model(**options):
        ctx = fa.context(samples, counting)
        predicted.clear()  # the clean predictions are the baseline's, not the step's
        result = test_hypothesis(step(**options), ctx, cache, base_key)
        return sum(predicted), result

    first, _ = images_through_the_model(corruptions=["gaussian_noise", "contrast"], severities=[1, 3])
    assert first == 24 * 2 * 2
    # one corruption more: only its two severities go through the model; the others come from the cache
    more, result = images_through_the_model(corruptions=["gaussian_noise", "contrast", "pixelate"], severities=[1, 3])
    assert more == 24 * 2
    # one severity more: only that severity of each corruption
    deeper, _ = images_through_the_model(corruptions=["gaussian_noise", "contrast", "pixelate"], severities=[1, 2, 3])
    assert deeper == 24 * 3
    assert images_through_the_model(corruptions=["contrast", "gaussian_noise", "pixelate"], severities=[1, 3])[0] == 0
    # the parts from the cache give the result a fresh run gives
    _, fresh = run(CorruptionsHypothesis, fa.context(samples, noise_is_sad),
                   corruptions=["gaussian_noise", "contrast", "pixelate"], severities=[1, 3])
    assert json.dumps(to_jsonable(result_dict(result))) == json.dumps(to_jsonable(result_dict(fresh)))
    assert np.array_equal(result.arrays["corrupted"], fresh.arrays["corrupted"])
    # another model (or other images) shares none of them
    ctx = fa.context(samples, counting)
    predicted.clear()
    test_hypothesis(step(corruptions=["gaussian_noise"], severities=[1]), ctx, cache, {**base_key, "model": "another"})
    assert sum(predicted) == 24


def noise_is_sad_for_half(images: np.ndarray) -> np.ndarray:
    """As noise_is_sad, but only the images coded 0 or 1 turn "sad" when noisy: a third of its errors."""
    noisy = images[:, 0, 2:6, :7].std(axis=(1, 2)) > 0.03
    code = fa.read_code(images)
    return fa.one_hot(np.where(noisy & (code < 2), fa.SAD, code))


def as_results(result, name: str) -> dict:
    """A results.json as the comparison reads it, around one corruptions result."""
    return {"schema_version": "2.2", "provenance": {"model": {"adapter": "torch", "fingerprint": name * 12},
                                                    "dataset": {"fingerprint": "same"}},
            "samples": {"n": result.n},
            "hypotheses": {"corruptions": {"status": "ok", "plugin": "corruptions",
                                           "options": {"reference_model": None}, **result_dict(result)}}}


def test_the_corruption_error_relative_to_a_reference_model(tmp_path):
    from xai_audit.judge.compare import compare_results
    from xai_audit.report.comparison import write_comparison

    samples = fa.make_samples(70)
    options = {"corruptions": ["gaussian_noise", "shot_noise"], "severities": [1, 3]}
    _, fragile = run(CorruptionsHypothesis, fa.context(samples, noise_is_sad), **options)
    _, half = run(CorruptionsHypothesis, fa.context(samples, noise_is_sad_for_half), **options)
    errors = {name: np.array(r.per_sample["corruption_error"]) for name, r in (("a", fragile), ("b", half))}
    assert errors["a"].shape == (70, 2) and errors["a"].mean() > 0.5
    # Hendrycks & Dietterich: each corruption's error over the reference's, averaged over the corruptions
    expected = float(np.mean(errors["b"].mean(axis=0) / errors["a"].mean(axis=0)))
    assert 0.2 < expected < 0.5  # about a third of the errors, by construction; no clean errors

    comparison = compare_results([("a", as_results(fragile, "a")), ("b", as_results(half, "b"))])
    rows = {r["model"]: r for r in comparison["corruption_reference"]}
    assert {r["reference"] for r in rows.values()} == {"a"}  # the first model, unless the plan names one
    assert rows["a"]["mce"] == 1.0 and rows["a"]["mce_ci"] == [1.0, 1.0]
    b = rows["b"]
    assert b["mce"] == pytest.approx(expected) and b["mce_ci"][0] < expected < b["mce_ci"][1] < 1
    assert b["relative_mce"] == pytest.approx(expected)  # no clean error: the relative mCE is the same
    assert b["n_common"] == 70 and b["left_out"] == []
    # the plan names the reference: the other model's errors are the denominators
    named = as_results(half, "b")
    named["hypotheses"]["corruptions"]["options"]["reference_model"] = "b"
    turned = {r["model"]: r for r in compare_results([("b", named), ("a", as_results(fragile, "a"))])
              ["corruption_reference"]}
    assert turned["a"]["reference"] == "b" and turned["b"]["mce"] == 1.0
    assert turned["a"]["mce"] == pytest.approx(float(np.mean(errors["a"].mean(axis=0) / errors["b"].mean(axis=0))))
    assert turned["a"]["mce_ci"][0] > 1
    # the comparison page shows it
    write_comparison(comparison, {}, tmp_path, formats=["html"])
    page = (tmp_path / "comparison.html").read_text()
    assert "Corruption error relative to a reference model" in page and f"{b['mce']:.2f} [" in page


def test_a_reference_model_the_plan_does_not_have_is_refused(registry, tmp_path):
    from xai_audit.errors import PlanError
    from xai_audit.plan.parse import parse_plan

    models = "\n".join(f"  - {{name: {name}, adapter: torch, module: tiny.py:make, classes: [a, b]}}"
                        for name in ("small", "large"))
    text = (f"models:\n{models}\ndataset: {{loader: synthetic-faces, n: 8}}\n"
            "hypotheses:\n  - corruptions: {corruptions: [contrast], reference_model: REF}\n")
    with pytest.raises(PlanError, match=r'hypotheses.*reference_model.*"huge", which is not a model .*small, large'):
        parse_plan(text.replace("REF", "huge"), registry, base_dir=tmp_path)
    plan = parse_plan(text.replace("REF", "large"), registry, base_dir=tmp_path)
    assert plan.hypotheses[0].options.reference_model == "large"


# --------------------------------------------------------------------------- adversarial


class CodeReader(torch.nn.Module):
    """Logits = 10 x the mouth row's first K red pixels: the class is the brightest of them."""

    def forward(self, x):
        return 10 * x[:, 0, 0, : fa.K]


class TorchAdapter(ModelAdapter):
    classes = fa.CLASSES

    def __init__(self):
        self.module = CodeReader()

    def forward(self, images):
        return self.module(images)

    def fingerprint(self):
        return "code-reader"


def margin_samples(n: int) -> list[Sample]:
    """Group a: the class pixel 8/255 above the others (flips at 4/255); group b: 32/255 above (flips at 16/255)."""
    out = []
    for s in fa.make_samples(n):
        image = s.image.copy()
        gap = 8 / 255 if int(s.id[1:]) % 2 else 32 / 255
        image[0, 0, : fa.K] = 0.5
        image[0, 0, s.label] = 0.5 + gap
        out.append(dataclasses.replace(s, image=image, groups={"tone": "a" if gap < 0.1 else "b"}))
    return out


def test_adversarial_finds_the_smallest_budget_and_the_group_that_flips_first():
    model = TorchAdapter()
    samples = margin_samples(40)
    ctx = HypothesisContext(model=model, samples=samples, probs=model.predict_proba(np.stack([s.image for s in samples])),
                            classes=list(fa.CLASSES), seed=0, predict=model.predict_proba)
    _, result = run(AdversarialHypothesis, ctx, max_images=40, budgets=["2/255", "8/255", "24/255"],
                    reference_budget="8/255", max_budget="32/255", l2_budgets=[0.01, 0.05], l2_max_budget=0.2)
    groups = {r["group"]: r for r in result.breakdown["per group: tone"]}
    assert groups["a"]["mean budget (/255)"] == pytest.approx(4, abs=0.3)
    assert groups["b"]["mean budget (/255)"] == pytest.approx(16, abs=0.3)
    assert groups["a"]["flipped at 8/255"] == 1.0 and groups["b"]["flipped at 8/255"] == 0.0
    # L2: half the margin off the class pixel, half onto another: the gap / sqrt(2)
    assert groups["a"]["mean L2 budget"] == pytest.approx(8 / 255 / np.sqrt(2), abs=0.002)
    assert groups["b"]["mean L2 budget"] == pytest.approx(32 / 255 / np.sqrt(2), abs=0.002)
    assert groups["a"]["flipped at L2 0.05"] == 1.0 and groups["b"]["flipped at L2 0.05"] == 0.0
    assert result.effect == 0.5 and result.verdict == "supported" and result.kind == "fragility"
    bias, bias_l2 = result.tests
    assert bias["kind"] == "bias" and bias["verdict"] == "supported" and bias["details"]["worst"] == "a"
    assert bias["effect"] == pytest.approx(12, abs=0.5) and bias["ci"][0] > 0  # in /255
    assert bias_l2["name"] == "L2 budget gap by tone" and bias_l2["verdict"] == "supported"
    assert bias_l2["effect"] == pytest.approx(24 / 255 / np.sqrt(2), abs=0.003)
    assert result.details["n_censored"] == 0 and result.details["l2"]["n_censored"] == 0
    assert {r["norm"] for r in result.breakdown["per budget"]} == {"L∞", "L2"}
    findings = audit(adversarial=result)["findings"]
    assert [f["kind"] for f in findings] == ["bias", "bias", "fragility"]
    assert findings[0]["group"] == {"column": "tone", "worst": "a", "best": "b"}
    assert findings[0]["severity"] == "medium"  # a budget is no share: 12 of 16 /255 less, never 'high'
    assert "flips at a mean L∞ budget of 4.0" in findings[0]["detail"] and "/255 less" in findings[0]["detail"]
    # the body shows the per-class budgets and the table per budget
    assert [f for f in result.figures if f.get("key")][0]["title"].startswith("Smallest flipping budget per class")
    assert result.key_tables == ["per budget"]


def test_adversarial_refuses_a_black_box():
    ctx = fa.context(fa.make_samples(8), fa.robust)
    with pytest.raises(ModelError, match="black box"):
        run(AdversarialHypothesis, ctx)


# --------------------------------------------------------------------------- calibration


def calibrated_context(n: int, seed: int, *, overconfident_group: bool = False) -> HypothesisContext:
    """Probabilities of varied confidence, labels drawn from them: calibrated by construction. With
    ``overconfident_group``, group 'b' gets probabilities sharpened after its labels are drawn."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (n, fa.K)) * rng.uniform(0.2, 3.0, (n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(fa.K, p=p) for p in probs])
    groups = np.where(np.arange(n) % 2 == 0, "a", "b")
    if overconfident_group:
        sharp = np.exp(3 * np.log(probs))
        sharp /= sharp.sum(axis=1, keepdims=True)
        probs = np.where((groups == "b")[:, None], sharp, probs)
    samples = [dataclasses.replace(s, label=int(labels[i]), groups={"clinic": str(groups[i])})
               for i, s in enumerate(fa.make_samples(n))]
    return fa.context(samples, fa.robust, probs=probs.astype(np.float32), seed=seed)


def test_a_perfectly_calibrated_model_shows_no_calibration_error():
    _, result = run(CalibrationHypothesis, calibrated_context(3000, seed=1))
    lo, hi = result.ci
    assert abs(result.effect) < 0.03 and lo <= 0 <= hi  # the debiased error: near 0, its interval covers 0
    assert result.details["ece"] < 0.04  # the plug-in ECE is small but biased upward ...
    assert result.details["ece_if_calibrated"] > 0  # ... by about what a calibrated model shows
    assert result.p_value > 0.05 and result.verdict == "not supported"
    assert result.details["temperature"] == pytest.approx(1.0, abs=0.1)
    (gap,) = result.tests
    assert gap["verdict"] == "not supported"
    assert {f["kind"] for f in result.figures} == {"lines", "scatter"}


def test_an_overconfident_group_is_a_calibration_gap_and_temperature_would_help():
    plugin, result = run(CalibrationHypothesis, calibrated_context(2000, seed=2, overconfident_group=True))
    assert result.verdict == "supported" and result.ci[0] > 0.01
    assert result.details["overconfidence"] > 0 and result.details["temperature"] > 1.2
    assert result.details["ece_after_temperature_cross_fitted"] < result.details["ece"]
    (gap,) = result.tests
    assert gap["kind"] == "bias" and gap["verdict"] == "supported" and gap["details"]["worst"] == "b"
    results = audit(calibration=result)
    bias = next(f for f in results["findings"] if f["kind"] == "bias")
    (row,) = plugin.recommend(bias, results["hypotheses"]["calibration"])
    assert row["action"] == "add-group" and row["group"] == "clinic=b"
    assert plugin.recommend(None, results["hypotheses"]["calibration"]) == []  # the temperature is no data


def test_calibration_needs_labels():
    with pytest.raises(DataError, match="needs labels"):
        run(CalibrationHypothesis, fa.context(fa.make_samples(20, labelled=False), fa.robust))


# --------------------------------------------------------------------------- data checks


def planted() -> tuple[HypothesisContext, set[str], dict]:
    """80 images: s0050 is an exact copy of s0000, s0051 a near copy of s0001; s0060-s0063 carry a wrong label;
    s0070 is nearly black. The reference: 60 other images, darker, plus exact copies of s0010-s0012."""
    samples = fa.make_samples(80)
    rng = np.random.default_rng(5)
    samples[50] = dataclasses.replace(samples[50], image=samples[0].image.copy(), label=samples[0].label)
    near = np.clip(samples[1].image + rng.normal(0, 0.004, samples[1].image.shape), 0, 1).astype(np.float32)
    samples[51] = dataclasses.replace(samples[51], image=near, label=samples[1].label)
    flipped = set()
    for i in range(60, 64):
        samples[i] = dataclasses.replace(samples[i], label=(samples[i].label + 1) % fa.K)
        flipped.add(samples[i].id)
    samples[70] = dataclasses.replace(samples[70], image=samples[70].image * 0.05)
    reference = [dataclasses.replace(s, id=f"r{s.id}", image=s.image * 0.7) for s in fa.make_samples(60, seed=9)]
    reference += [dataclasses.replace(samples[i], id=f"ref-copy-{i}") for i in (10, 11, 12)]
    loaded = {}

    def load_dataset(options):
        loaded.update(options)
        return ListDataset(reference)

    return fa.context(samples, fa.robust, load_dataset=load_dataset), flipped, loaded


def test_planted_duplicates_label_errors_leakage_and_drift_are_found():
    ctx, flipped, loaded = planted()
    plugin, result = run(DataChecksHypothesis, ctx, reference={"loader": "list", "path": "ref"})
    assert loaded == {"loader": "list", "path": "ref"}
    pairs = {(r["id"], r["duplicate of"], r["kind"]) for r in result.breakdown["duplicates"]}
    assert pairs == {("s0000", "s0050", "exact"), ("s0001", "s0051", "near")}
    assert result.effect == pytest.approx(2 / 80) and result.verdict == "supported"
    tests = {t["name"]: t for t in result.tests}
    assert set(result.details["label_error_ids"]) == flipped and tests["label errors"]["verdict"] == "supported"
    assert {r["suggested label"] for r in result.breakdown["label errors"]} <= set(fa.CLASSES)
    assert set(result.details["leaked_ids"]) == {"s0010", "s0011", "s0012"}
    assert tests["leakage"]["verdict"] == "supported"
    assert tests["drift: brightness"]["verdict"] == "supported" and tests["drift: brightness"]["kind"] == "shift"
    assert tests["drift: brightness"]["p_value"] < 1e-6
    assert "s0070" in result.details["outlier_ids"]
    results = audit(**{"data-checks": result})
    rows = recommend(results, ctx.samples, {"data-checks": plugin})
    relabel = {r["sample_id"] for r in rows if r["action"] == "relabel-or-add" and r["kind"] == "label error"}
    assert relabel == flipped  # one row per image: the manifest does not merge rows about different samples
    assert any(r["action"] == "add-data" and "brightness" in r["group"] for r in rows)


def test_clean_data_have_no_duplicates_and_no_label_errors():
    ctx = fa.context(fa.make_samples(60), fa.robust)
    _, result = run(DataChecksHypothesis, ctx)
    assert result.effect == 0 and result.verdict == "not supported"
    assert result.details["n_label_errors"] == 0 and result.details["n_outliers"] == 0
    tests = {t["name"]: t for t in result.tests}
    assert set(tests) == {"label errors", "cue: brightness", "cue: contrast", "cue: saturation", "cue: sharpness"}
    assert all(t["verdict"] == "not supported" for t in tests.values())  # no property tied to a class
    assert result.key_tables == ["summary"] and result.breakdown["summary"][0]["check"].startswith("duplicates")


def test_a_reference_with_planted_imbalances_is_reported_without_false_leakage():
    """The audited data: 120 images, three tones evenly. The reference (a training split): 300 other images,
    tone c only 2 %, and its 'sad' images darkened, as the demo's training split is."""
    tone = lambda i: {"tone": "abc"[i % 3]}  # noqa: E731
    audited = fa.make_samples(120, groups=tone)
    reference = []
    for s in fa.make_samples(300, seed=4):
        i = int(s.id[1:])
        image = s.image * 0.5 if s.label == fa.SAD else s.image
        reference.append(dataclasses.replace(s, id=f"r{i}", image=image,
                                             groups={"tone": "c" if i % 50 == 0 else "ab"[i % 2]}))
    ctx = fa.context(audited, fa.robust, load_dataset=lambda options: ListDataset(reference))
    _, result = run(DataChecksHypothesis, ctx, reference={"loader": "list", "path": "train"}, n_boot=200,
                    n_permutations=199)
    tests = {t["name"]: t for t in result.tests}
    tone_test = tests["imbalance: tone"]
    assert tone_test["verdict"] == "supported" and tone_test["details"]["rare_in_reference"] == ["c"]
    assert tone_test["ci"][0] <= tone_test["effect"] <= tone_test["ci"][1]
    assert any("c is 2.0 % of the reference" in w for w in result.warnings)
    assert tests["imbalance: class"]["verdict"] == "not supported"  # both class mixes are even
    cue = tests["cue: brightness"]
    assert cue["verdict"] == "supported" and cue["details"]["class"] == "sad" and "lower brightness" in cue["claim"]
    assert cue["effect"] > 0.9 and cue["ci"][0] > 0.3
    assert tests["leakage"]["verdict"] == "not supported" and result.details["n_leaked"] == 0
    assert tests["drift: brightness"]["verdict"] == "supported"
    # the model reads the code row only: darker images look the same to it, so its outputs do not drift
    assert tests["drift: embedding"]["verdict"] == "not supported"
    assert result.details["embedding_drift"]["embedding"] == "the model's probabilities"
    mix = {(r["column"], r["value"]): r for r in result.breakdown["class and group mix"]}
    assert mix[("tone", "c")]["rare in reference"] and mix[("tone", "c")]["reference share"] == pytest.approx(0.02)


def test_embedding_drift_is_found_when_the_model_sees_other_images():
    from xai_audit_robustness.data_checks import mmd_test

    rng = np.random.default_rng(0)
    same = mmd_test(rng.normal(0, 1, (150, 8)), rng.normal(0, 1, (150, 8)), seed=0, permutations=199, n_boot=50)
    moved = mmd_test(rng.normal(0, 1, (150, 8)), rng.normal(0.5, 1, (150, 8)), seed=0, permutations=199, n_boot=50)
    assert same[1] > 0.05 and same[2][0] <= 0 <= same[2][1]
    assert moved[1] < 0.01 and moved[2][0] > 0
    # in a run: a reference of 'sad' faces only draws other predictions
    reference = [dataclasses.replace(s, label=fa.SAD, image=np.where(np.arange(8)[None, None, :] < fa.K,
                                                                      0.2, s.image).astype(np.float32))
                 for s in fa.make_samples(80, seed=3)]
    for s in reference:
        s.image[0, 0, fa.SAD] = 1.0
    ctx = fa.context(fa.make_samples(80), fa.robust, load_dataset=lambda options: ListDataset(reference))
    _, result = run(DataChecksHypothesis, ctx, reference={"loader": "list"}, n_boot=100, n_permutations=199)
    tests = {t["name"]: t for t in result.tests}
    assert tests["drift: embedding"]["verdict"] == "supported"
    assert tests["imbalance: class"]["verdict"] == "supported"


# --------------------------------------------------------------------------- every result gates through checks:


def test_each_result_gates_through_checks():
    corr = run(CorruptionsHypothesis, fa.context(fa.make_samples(40), noise_is_sad),
               corruptions=["gaussian_noise"], severities=[1])[1]
    model = TorchAdapter()
    samples = margin_samples(20)
    adv_ctx = HypothesisContext(model=model, samples=samples, probs=model.predict_proba(np.stack([s.image for s in samples])),
                                classes=list(fa.CLASSES), seed=0, predict=model.predict_proba)
    adv = run(AdversarialHypothesis, adv_ctx, max_images=20, reference_budget="8/255")[1]
    cal = run(CalibrationHypothesis, calibrated_context(500, seed=3), n_resamples=499)[1]
    ctx, _, _ = planted()
    data = run(DataChecksHypothesis, ctx, reference={"loader": "list"})[1]
    results = audit(corruptions=corr, adversarial=adv, calibration=cal, **{"data-checks": data})
    assert gate(results, "hypotheses.corruptions.accuracy_drop < 0.1") == "FAIL"
    assert gate(results, "hypotheses.corruptions.details.mce <= 0.9") == "PASS"
    assert gate(results, "hypotheses.adversarial.effect < 0.1") == "FAIL"
    assert gate(results, "hypotheses.calibration.details.ece < 0.1") == "PASS"
    assert gate(results, 'hypotheses.calibration.verdict != "supported"') == "PASS"
    assert gate(results, "hypotheses.data-checks.details.n_label_errors == 0") == "FAIL"
    assert gate(results, "hypotheses.data-checks.details.leakage_share == 0") == "FAIL"
    json.dumps(results)  # plain data all the way down


def test_the_plugins_run_in_an_audit_and_gate_it(write_plan, tmp_path):
    from typer.testing import CliRunner

    from xai_audit.cli import app

    hypotheses = (
        "  - corruptions: {corruptions: [gaussian_noise, jpeg_compression], severities: [1, 5]}\n"
        "  - adversarial: {max_images: 12, steps: 5, bisection: 4}\n"
        "  - calibration: {n_resamples: 499, n_boot: 200}\n"
        "  - data-checks: {reference: {loader: synthetic-faces, split: test, n: 30, size: 32}, n_boot: 200}\n"
    )
    checks = (
        "checks:\n"
        "  - \"hypotheses.corruptions.details.mce <= 1\"\n"
        "  - \"hypotheses.adversarial.details.mean_budget >= 0\"\n"
        "  - \"hypotheses.calibration.details.ece <= 1\"\n"
        "  - \"hypotheses.data-checks.details.leakage_share == 0\"\n"
    )
    plan = write_plan(plan_text(hypotheses=hypotheses, extra=checks, n=30))
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["run", str(plan), "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert (out / "results.json").exists(), result.output
    results = json.loads((out / "results.json").read_text())
    assert not results["failures"], results["failures"]
    assert {h["status"] for h in results["hypotheses"].values()} == {"ok"}
    status = {row["check"]: row["status"] for row in results["checks"]}
    # the reference is the audited split itself: every audited image leaks, and the gate fails
    assert status["hypotheses.data-checks.details.leakage_share == 0"] == "FAIL" and result.exit_code == 1
    assert [s for c, s in status.items() if "leakage" not in c] == ["PASS"] * 3
    assert results["hypotheses"]["data-checks"]["details"]["leakage_share"] == 1.0


# --------------------------------------------------------------------------- the host's conformance suite


@pytest.mark.parametrize("cls, options", [
    (CorruptionsHypothesis, {"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 3]}),
    (AdversarialHypothesis, {"max_images": 4, "steps": 2, "bisection": 2}),
    (CalibrationHypothesis, {"n_resamples": 199, "n_boot": 100}),
    (DataChecksHypothesis, {"n_boot": 100}),
], ids=lambda v: getattr(v, "name", ""))
def test_the_plugins_pass_the_conformance_suite(cls, options):
    from xai_audit.testing import check_plugin

    check_plugin(cls, options, models=("cnn",))


# --------------------------------------------------------------------------- darken, and what the report shows


def test_darken_is_imagenet_c_brightness_turned_around():
    from skimage import color

    from xai_audit_robustness.corruptions import darken

    x = np.random.default_rng(0).uniform(0, 1, (3, 3, 8, 8)).astype(np.float32)
    for severity, shift in ((1, 0.1), (5, 0.5)):
        hsv = color.rgb2hsv(x.transpose(0, 2, 3, 1).astype(np.float64))
        hsv[..., 2] = np.clip(hsv[..., 2] - shift, 0, 1)
        expected = color.hsv2rgb(hsv).transpose(0, 3, 1, 2)
        assert np.abs(darken(x, severity) - expected).max() < 1e-5
    ctx = fa.context(fa.make_samples(40), fa.shortcut)  # a dark image is "sad" whatever it shows
    _, result = run(CorruptionsHypothesis, ctx, corruptions=["darken", "pixelate"], severities=[1, 5])
    tests = {t["name"]: t for t in result.tests}
    assert tests["shortcut: darken"]["verdict"] == "supported" and tests["shortcut: darken"]["details"]["class"] == "sad"


def test_the_body_shows_key_figures_tables_and_which_corruptions_are_shortcuts():
    from xai_audit.report import conclusions
    from xai_audit.report.artifacts import ReportArtifacts
    from xai_audit.report.context import _hypotheses

    ctx = fa.context(fa.make_samples(40), fa.shortcut)
    _, result = run(CorruptionsHypothesis, ctx, corruptions=["darken", "gaussian_noise"], severities=[1, 5])
    steps = audit(corruptions=result)["hypotheses"]
    (item,) = _hypotheses(steps, {}, ReportArtifacts(hypotheses={"corruptions": result}))["steps"]
    assert item["figure"] is None  # the degradation curves stand in for the before/after chart
    assert [f["caption"][:19] for f in item["key_figures"]] == ["Degradation curves:"]
    assert item["key_figures"][0]["src"].startswith("data:image/png")
    assert all(not f["caption"].startswith("Degradation") for f in item["extra_figures"])
    (table,) = item["key_tables"]
    assert table["title"] == "worst corruptions" and len(table["rows"]) == 2
    lines = {line["label"]: line["text"] for line in conclusions.subject_lines(steps["corruptions"])}
    assert "darken → 'sad'" in lines["Shortcut"]
    assert set(lines) <= {"Shortcut", "Fragility, not a shortcut", "No effect shown"}


def test_the_explained_images_are_chosen_on_raw_probabilities_and_say_so():
    from xai_audit.run.examples import choose_examples

    samples = fa.make_samples(20)
    probs = fa.robust(np.stack([s.image for s in samples]))
    chosen = choose_examples(samples, probs, np.array([s.label for s in samples]), 4, fa.CLASSES)
    assert chosen.summary["probabilities"] == "raw" and "raw probabilities" in chosen.summary["rule"]
