"""Every built-in hypothesis, on hand-built contexts with fake models whose answers are known."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

import fake_audit as fa
from xai_audit.errors import DataError, PlanError
from xai_audit.judge.findings import derive_findings
from xai_audit.report.specs import render_spec
from xai_audit.judge.correction import correct_for_multiple_tests as _correct_for_multiple_tests
from xai_audit.run.steps import result_dict as _result_dict
from xai_audit.contract.types import Dataset, Sample
from xai_audit_hypotheses.background import BackgroundHypothesis
from xai_audit_hypotheses.custom import TransformHypothesis
from xai_audit_hypotheses.dataset_shift import DatasetShiftHypothesis
from xai_audit_hypotheses.face_mask import MaskLowerFaceHypothesis, draw_face_masks
from xai_audit_hypotheses.grayscale import GrayscaleHypothesis
from xai_audit_hypotheses.groups import GroupAccuracyHypothesis
from xai_audit_hypotheses.luminance import LuminanceHypothesis
from xai_audit_hypotheses.occlusion import OccludeRegionsHypothesis, lower_face_mask


def run(plugin_cls, ctx, **options):
    plugin = plugin_cls(plugin_cls.Options(**options))
    return plugin.test(ctx)


def audit(**results):
    """Results as the runner holds them: Holm across every test, then findings."""
    hypotheses = {name: {"status": "ok", "plugin": name, "options": {}, **_result_dict(r)} for name, r in results.items()}
    _correct_for_multiple_tests(hypotheses)
    return {"hypotheses": hypotheses, "findings": derive_findings({"hypotheses": hypotheses})}


# --------------------------------------------------------------------------- shortcut or fragility


def test_a_shortcut_drains_predictions_into_one_class():
    ctx = fa.context(fa.make_samples(80), fa.shortcut)
    result = run(LuminanceHypothesis, ctx, factor=0.2)
    assert result.kind == "fragility" and result.verdict == "supported"
    assert result.before == 1.0 and result.after == pytest.approx(0.25)  # only the sad images stay right
    shortcut = result.tests[0]
    assert shortcut["kind"] == "shortcut" and shortcut["verdict"] == "supported"
    assert shortcut["details"]["class"] == "sad"
    assert shortcut["before"] == pytest.approx(0.25) and shortcut["after"] == 1.0
    assert shortcut["details"]["concentration"] == 1.0
    shift = {row["class"]: row for row in result.breakdown["prediction shift"]}
    assert shift["sad"]["moved in"] == 60 and shift["calm"]["moved out"] == 20
    findings = audit(luminance=result)["findings"]
    assert [f["kind"] for f in findings] == ["shortcut"]  # the shortcut absorbs the accuracy drop it explains
    assert "'sad'" in findings[0]["detail"] and "accuracy falls from 100.0 % to 25.0 %" in findings[0]["detail"]


def test_fragility_spreads_the_errors_and_is_not_a_shortcut():
    ctx = fa.context(fa.make_samples(200), fa.fragile)
    result = run(LuminanceHypothesis, ctx, factor=0.2)
    assert result.verdict == "supported" and result.effect > 0.5
    shortcut = result.tests[0]
    assert shortcut["verdict"] == "not supported"
    assert shortcut["details"]["concentration"] < 0.5
    assert "spread" in shortcut["details"]["reading"]
    findings = audit(luminance=result)["findings"]
    assert [f["kind"] for f in findings] == ["fragility"]
    assert "spread" in findings[0]["detail"]


def test_a_robust_model_is_not_flagged():
    ctx = fa.context(fa.make_samples(80), fa.robust)
    for cls, options in ((LuminanceHypothesis, {"factor": 0.2}), (GrayscaleHypothesis, {})):
        result = run(cls, ctx, **options)
        assert result.effect == 0 and result.verdict == "not supported"
        assert result.details["flip_rate"] == 0
        assert result.tests[0]["verdict"] == "not supported"
    assert audit(luminance=run(LuminanceHypothesis, ctx))["findings"] == []


def test_without_labels_flip_rate_and_the_shortcut_test_still_run():
    ctx = fa.context(fa.make_samples(80, labelled=False), fa.shortcut)
    result = run(LuminanceHypothesis, ctx, factor=0.2)
    assert ctx.labels is None
    assert result.metric.startswith("flip rate") and result.effect == pytest.approx(0.75)
    assert result.verdict == "supported" and result.p_value < 1e-10
    assert result.tests[0]["verdict"] == "supported" and result.tests[0]["details"]["class"] == "sad"
    assert "mean_confidence_after" in result.details


def test_min_effect_and_min_concentration_are_honoured():
    ctx = fa.context(fa.make_samples(80), fa.shortcut)
    result = run(LuminanceHypothesis, ctx, factor=0.2, min_effect=0.9, min_concentration=1.01 - 0.01)
    assert result.verdict == "not supported"  # a 75 pp drop does not clear 90 pp
    assert result.tests[0]["verdict"] == "supported"  # concentration exactly 1.0 >= 1.0
    result = run(LuminanceHypothesis, ctx, factor=0.2, min_shift=0.9)
    assert result.tests[0]["verdict"] == "not supported"


def test_figures_are_data_and_render():
    ctx = fa.context(fa.make_samples(40), fa.shortcut)
    result = run(LuminanceHypothesis, ctx, factor=0.2)
    kinds = [f["kind"] for f in result.figures]
    assert kinds == ["matrix", "bars", "images"]
    matrix = result.figures[0]
    assert np.array(matrix["values"]).sum() == 40 and matrix["rows"] == fa.CLASSES
    assert result.arrays["examples"].shape[1:] == (3, 8, 8)
    for spec in result.figures:
        assert render_spec(spec, result.arrays)["src"].startswith("data:image/png;base64,")


def test_sample_option_tests_a_seeded_subset():
    ctx = fa.context(fa.make_samples(80), fa.shortcut)
    a = run(LuminanceHypothesis, ctx, sample=40)
    b = run(LuminanceHypothesis, ctx, sample=40)
    assert a.n == 40 and a.examples == b.examples


# --------------------------------------------------------------------------- regions


def test_occluding_the_region_that_carries_the_class_is_reliance_and_hair_is_nothing():
    ctx = fa.context(fa.make_samples(80), fa.robust)
    result = run(OccludeRegionsHypothesis, ctx, regions=["mouth", "hair", "background"], fill="mean",
                 label_regions=["mouth"])
    assert result.details["primary_region"] == "mouth"
    assert result.kind == "reliance" and result.verdict == "supported" and result.effect == pytest.approx(0.75)
    by_name = {t["name"]: t for t in result.tests}
    assert by_name["occlude hair"]["verdict"] == "not supported" and by_name["occlude hair"]["kind"] == "fragility"
    assert "shortcut: hair" in by_name and "shortcut: mouth" not in by_name  # the mouth carries the label
    findings = audit(**{"occlude-regions": result})["findings"]
    assert [f["kind"] for f in findings] == ["reliance"] and findings[0]["severity"] == "info"
    rows = {r["region"]: r for r in result.breakdown["by region"]}
    assert rows["mouth"]["carries the label"] and not rows["hair"]["carries the label"]
    assert result.arrays["regions"].shape[0] == 4  # clean + 3 regions


@pytest.mark.parametrize("fill", ["black", "blur", "mean"])
def test_occlusion_fills_change_only_the_region(fill):
    from xai_audit_hypotheses.occlusion import fill_images

    samples = fa.make_samples(3)
    images = np.stack([s.image for s in samples])
    masks = np.stack([s.regions["hair"] for s in samples])
    out = fill_images(images, masks, fill)
    assert np.array_equal(out[:, :, ~masks[0]], images[:, :, ~masks[0]])
    assert not np.array_equal(out[:, :, masks[0]], images[:, :, masks[0]])


def test_regions_without_masks_are_a_clear_error():
    ctx = fa.context(fa.make_samples(8, with_regions=False), fa.robust)
    for cls in (OccludeRegionsHypothesis, BackgroundHypothesis, MaskLowerFaceHypothesis):
        with pytest.raises(DataError, match="needs region masks.*s0000.*regions: \\{source"):
            run(cls, ctx)
    ctx = fa.context(fa.make_samples(8), fa.robust)
    with pytest.raises(DataError, match="no region 'ears'"):
        run(OccludeRegionsHypothesis, ctx, regions=["ears"])


def test_lower_face_and_the_face_mask_cover_the_face_below_the_nose():
    sample = fa.make_samples(1)[0]
    lower = lower_face_mask(sample)
    assert lower[3:6, :7].all() and not lower[:3].any() and not lower[6:].any()
    out = draw_face_masks(sample.image[None], [sample], (0.6, 0.8, 0.9))[0]
    changed = np.any(out != sample.image, axis=0)
    assert changed[4:6, :7].all() and not changed[0].any()


def test_background_changes_only_the_background():
    ctx = fa.context(fa.make_samples(8), fa.robust)
    result = run(BackgroundHypothesis, ctx, mode="recolour", color=(0, 1, 0))
    assert result.verdict == "not supported" and result.effect == 0
    from xai_audit_hypotheses.background import BackgroundOptions

    plugin = BackgroundHypothesis(BackgroundOptions(mode="darken", factor=0.0))
    seen = {}

    def predict(images):
        seen["images"] = images
        return fa.robust(images)

    plugin.test(fa.context(fa.make_samples(8), predict))
    assert np.all(seen["images"][:, :, :, 7] == 0) and np.array_equal(
        seen["images"][:, :, :, :7], np.stack([s.image for s in fa.make_samples(8)])[:, :, :, :7])


# --------------------------------------------------------------------------- custom transforms


def test_any_callable_becomes_a_hypothesis(tmp_path, monkeypatch):
    (tmp_path / "my_transforms.py").write_text(textwrap.dedent("""
        def darken(images, amount=0.8):
            return images * (1 - amount)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    ctx = fa.context(fa.make_samples(40), fa.shortcut)
    result = run(TransformHypothesis, ctx, callable="my_transforms:darken", description="the lights go out",
                 kwargs={"amount": 0.8})
    assert result.claim == "The model's accuracy drops when the lights go out."
    assert result.tests[0]["verdict"] == "supported"
    with pytest.raises(PlanError, match="cannot import 'no_such_module'"):
        run(TransformHypothesis, ctx, callable="no_such_module:fn")
    with pytest.raises(PlanError, match="has no 'nothing'"):
        run(TransformHypothesis, ctx, callable="my_transforms:nothing")
    with pytest.raises(Exception, match="package.module:function"):
        TransformHypothesis.Options(callable="not a path")
    sys.modules.pop("my_transforms", None)


def test_a_transform_that_breaks_shapes_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "bad_transforms.py").write_text("def crop(images):\n    return images[:, :, :4]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="returned shape"):
        run(TransformHypothesis, fa.context(fa.make_samples(8), fa.robust), callable="bad_transforms:crop")
    sys.modules.pop("bad_transforms", None)


# --------------------------------------------------------------------------- another data set


class OtherFaces(Dataset):
    """Faces whose classes are named differently; 'glum' is the model's 'sad'."""

    classes = ["glum", "tranquil", "other"]

    def __init__(self, n: int, dark: bool):
        self.samples = []
        for i, s in enumerate(fa.make_samples(n, seed=9)):
            label = {fa.SAD: 0, 0: 1}.get(s.label, 2)
            image = s.image * (0.2 if dark else 1.0)
            self.samples.append(Sample(id=f"o{i}", image=image, label=label))

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]

    def fingerprint(self):
        return "other"


def test_dataset_shift_with_a_label_map():
    loaded = {}

    def load(options):
        loaded.update(options)
        return OtherFaces(80, dark=options.get("dark", False))

    ctx = fa.context(fa.make_samples(80), fa.shortcut, load_dataset=load)
    result = run(DatasetShiftHypothesis, ctx, dataset={"loader": "fake", "dark": True},
                 label_map={"glum": "sad", "tranquil": "calm", "other": None}, name="dark faces")
    assert loaded == {"loader": "fake", "dark": True}
    assert result.kind == "shift" and result.n == 40  # 'other' is dropped
    assert result.after == pytest.approx(0.5)  # glum stays sad (right), tranquil becomes sad (wrong)
    assert result.verdict == "supported" and result.details["dropped_unmapped"] == 40
    same = run(DatasetShiftHypothesis, fa.context(fa.make_samples(80), fa.shortcut, load_dataset=load),
               dataset={"loader": "fake"}, label_map={"glum": "sad", "tranquil": "calm", "other": None})
    assert same.effect == 0 and same.verdict == "not supported"
    with pytest.raises(DataError, match="not a model class"):
        run(DatasetShiftHypothesis, ctx, dataset={"loader": "fake"}, label_map={"glum": "blue"})
    with pytest.raises(Exception, match="loader"):
        DatasetShiftHypothesis.Options(dataset={"path": "x"})


def test_dataset_shift_without_labels_compares_prediction_shares():
    ctx = fa.context(fa.make_samples(80), fa.shortcut, load_dataset=lambda o: OtherFaces(80, dark=True))
    result = run(DatasetShiftHypothesis, ctx, dataset={"loader": "fake"})  # no class name matches: nothing mapped
    assert result.metric.startswith("total variation") and result.verdict == "supported"
    assert result.effect == pytest.approx(0.75)


# --------------------------------------------------------------------------- groups


def tone_and_age(i: int) -> dict[str, str]:
    return {"tone": "dark" if i % 2 else "light", "age": "old" if (i // 2) % 2 else "young"}


def probs_failing(samples, fail) -> np.ndarray:
    """Right except on samples where ``fail(i)``: there, one class off."""
    preds = np.array([(s.label + 1) % fa.K if fail(i) else s.label for i, s in enumerate(samples)])
    return fa.one_hot(preds)


def test_group_accuracy_names_the_worst_group_and_tests_the_gap():
    samples = fa.make_samples(400, groups=tone_and_age)
    probs = probs_failing(samples, lambda i: i % 2 == 1 and i % 10 < 5)  # dark (odd i): wrong on i % 10 in {1, 3}
    ctx = fa.context(samples, fa.robust, probs=probs)
    result = run(GroupAccuracyHypothesis, ctx, by=["tone", "age"])
    assert result.kind == "bias" and result.verdict == "supported"
    assert result.details["worst"] == "dark" and result.details["best"] == "light"
    assert result.effect == pytest.approx(0.4) and result.ci[0] > 0.03
    names = [t["name"] for t in result.tests]
    assert names == ["gap by age", "gap by tone × age"]
    inter = {r["group"] for r in result.breakdown["tone × age"]}
    assert inter == {"dark; old", "dark; young", "light; old", "light; young"}
    recall = result.breakdown["tone: recall per class"]
    assert {r["group"] for r in recall} == {"dark", "light"} and set(fa.CLASSES) <= set(recall[0])
    fairness = result.breakdown["fairness gaps"][0]
    assert fairness["groups"] == "tone" and fairness["equalized odds difference"] > 0.3


def test_fairness_gaps_match_a_hand_count():
    # two classes' worth: on group b the model never predicts class 0 when it is class 0
    samples = fa.make_samples(80, groups=lambda i: {"g": "a" if i < 40 else "b"})
    preds = np.array([1 if (i >= 40 and s.label == 0) else s.label for i, s in enumerate(samples)])
    ctx = fa.context(samples, fa.robust, probs=fa.one_hot(preds))
    result = run(GroupAccuracyHypothesis, ctx, by=["g"], min_group_size=10)
    fairness = result.breakdown["fairness gaps"][0]
    # class 0: true positive rate 1.0 in a, 0.0 in b -> equalized odds difference 1.0
    assert fairness["equalized odds difference"] == pytest.approx(1.0) and fairness["eo class"] == "calm"
    # class 1 ("sad") is predicted for 25 % of a and 50 % of b -> demographic parity difference 0.25
    assert fairness["demographic parity difference"] == pytest.approx(0.25)


def test_equal_groups_are_not_flagged_and_small_groups_are_warned_about():
    groups = lambda i: {"tone": "rare" if i < 10 else ("x" if i % 2 else "y")}  # noqa: E731
    samples = fa.make_samples(210, groups=groups)
    probs = probs_failing(samples, lambda i: i < 10 or i % 5 == 0)
    result = run(GroupAccuracyHypothesis, fa.context(samples, fa.robust, probs=probs), by=["tone"])
    assert result.verdict == "not supported"
    assert any("rare (n = 10)" in w and "too small to judge" in w for w in result.warnings)
    rare = next(r for r in result.breakdown["tone"] if r["group"] == "rare")
    assert rare["too small"] and rare["accuracy"] == 0.0


def test_a_small_real_gap_below_min_gap_is_not_a_finding():
    samples = fa.make_samples(2000, groups=lambda i: {"tone": "a" if i % 2 else "b"})
    probs = probs_failing(samples, lambda i: i % 2 == 1 and i % 100 < 2)  # a 2 pp gap, certain with n = 2000
    result = run(GroupAccuracyHypothesis, fa.context(samples, fa.robust, probs=probs), by=["tone"])
    assert result.p_value < 0.01 and result.effect == pytest.approx(0.02)
    assert result.ci[0] < 0.03 and result.verdict == "not supported"  # real, but below min_gap (3 pp)


def test_without_labels_groups_are_compared_by_what_the_model_predicts():
    samples = fa.make_samples(200, labelled=False, groups=lambda i: {"tone": "a" if i % 2 else "b"})
    preds = np.array([fa.SAD if i % 2 else i % fa.K for i in range(200)])
    result = run(GroupAccuracyHypothesis, fa.context(samples, fa.robust, probs=fa.one_hot(preds)), by=["tone"])
    assert result.verdict == "supported" and "'sad'" in result.claim and "demographic parity" in result.claim
    assert result.effect == pytest.approx(1.0)  # group a: always sad; group b (even i): calm or glad, never sad


def test_without_group_columns_a_skin_tone_estimate_is_used_and_labelled_so():
    samples = fa.make_samples(120)
    tones = [(0.92, 0.76, 0.64), (0.34, 0.22, 0.15)]
    for i, s in enumerate(samples):
        s.image[:, s.regions["skin"]] = np.array(tones[i % 2], np.float32)[:, None]
    probs = probs_failing(samples, lambda i: i % 2 == 1)
    result = run(GroupAccuracyHypothesis, fa.context(samples, fa.robust, probs=probs))
    assert result.details["column"] == "skin tone (ITA estimate)"
    assert {r["group"] for r in result.breakdown["skin tone (ITA estimate)"]} == {"very light", "dark"}
    assert result.details["worst"] == "dark"
    assert any("estimate" in w and "not a person's skin type" in w for w in result.warnings)


def test_unknown_group_column_is_a_clear_error():
    ctx = fa.context(fa.make_samples(20, groups=tone_and_age), fa.robust)
    with pytest.raises(DataError, match="no group column 'gender'.*'age', 'tone'"):
        run(GroupAccuracyHypothesis, ctx, by=["gender"])
