"""Honest statistics: audits of a model with no real effect rarely conclude anything.

Each simulated audit runs the intervention hypotheses (luminance, grayscale,
occlude-regions), their shortcut tests and group-accuracy (two columns and
their intersection) on a fresh null model: its answers are drawn afresh at
every call, right with a fixed probability, whatever the image looks like
and whichever group it belongs to. Every test is under its null hypothesis,
so a finding is a false alarm. With Holm correction across the audit, the
share of audits with any finding must stay at or below the nominal 5 %.
"""

from __future__ import annotations

import numpy as np

import fake_audit as fa
from xai_audit.judge.findings import derive_findings
from xai_audit.judge.correction import correct_for_multiple_tests as _correct_for_multiple_tests
from xai_audit.run.steps import result_dict as _result_dict
from xai_audit_hypotheses.grayscale import GrayscaleHypothesis
from xai_audit_hypotheses.groups import GroupAccuracyHypothesis
from xai_audit_hypotheses.luminance import LuminanceHypothesis
from xai_audit_hypotheses.occlusion import OccludeRegionsHypothesis

N_AUDITS = 200
N_SAMPLES = 120
PLAN = (
    (LuminanceHypothesis, {"factor": 0.2}),
    (GrayscaleHypothesis, {}),
    (OccludeRegionsHypothesis, {"regions": ["mouth", "hair"], "fill": "mean", "label_regions": []}),
    (GroupAccuracyHypothesis, {"by": ["tone", "age"], "min_group_size": 10, "fairness": False}),
)


def groups(i: int) -> dict[str, str]:
    return {"tone": "ABC"[i % 3], "age": "young" if (i // 3) % 2 else "old"}


def one_null_audit(seed: int) -> tuple[dict, list[dict]]:
    samples = fa.make_samples(N_SAMPLES, seed=seed, groups=groups)
    model = fa.NullModel(seed)
    model.register(samples)
    ctx = fa.context(samples, model, seed=seed)
    hypotheses = {}
    for cls, options in PLAN:
        result = cls(cls.Options(**options)).test(ctx)
        hypotheses[cls.name] = {"status": "ok", "plugin": cls.name, "options": options, **_result_dict(result)}
    raw = {
        name: [e["verdict"] == "supported" for e in [entry, *entry["tests"]] if e.get("p_value") is not None]
        for name, entry in hypotheses.items()
    }
    _correct_for_multiple_tests(hypotheses)
    return raw, derive_findings({"hypotheses": hypotheses})


def test_audits_of_a_model_with_no_effect_raise_at_most_five_percent_false_alarms():
    audits_with_findings = 0
    raw_alarms: dict[str, list[int]] = {}
    n_tests = set()
    for seed in range(N_AUDITS):
        raw, findings = one_null_audit(seed)
        audits_with_findings += bool(findings)
        for name, verdicts in raw.items():
            raw_alarms.setdefault(name, [0] * len(verdicts))
            raw_alarms[name] = [a + v for a, v in zip(raw_alarms[name], verdicts)]
        n_tests.add(sum(len(v) for v in raw.values()))
    rate = audits_with_findings / N_AUDITS
    print(f"false-alarm rate over {N_AUDITS} null audits of {n_tests} tests each: {100 * rate:.1f} %")
    assert n_tests == {11}  # luminance, grayscale: drop + shortcut; 2 regions x (drop + shortcut); 3 group gaps
    assert rate <= 0.05
    # each test alone, before correction, also holds its level (allowing binomial noise over 200 runs)
    for name, alarms in raw_alarms.items():
        for k, count in enumerate(alarms):
            assert count / N_AUDITS <= 0.09, (name, k, count)


def test_the_null_model_really_has_no_effect():
    samples = fa.make_samples(2000, seed=1, groups=groups)
    model = fa.NullModel(1, accuracy=0.8)
    model.register(samples)
    images = np.stack([s.image for s in samples])
    labels = np.array([s.label for s in samples])
    clean = (model(images).argmax(axis=1) == labels).mean()
    dark = (model(images * 0.2).argmax(axis=1) == labels).mean()
    assert abs(clean - 0.8) < 0.03 and abs(dark - 0.8) < 0.03
