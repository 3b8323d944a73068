from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from conftest import plan_text
from xai_audit import hookimpl
from xai_audit.run.cache import Cache
from xai_audit.plan import load_plan
from xai_audit.registry import make_plugin_manager
from xai_audit.audit import run_audit
from xai_audit.contract.types import ExplainerPlugin, HypothesisPlugin

IG = "  - integrated-gradients: {steps: 4}\n"
HYPS = "  - grayscale\n  - group-accuracy: {by: [skin_tone], min_group_size: 2}\n"


class Exploding(HypothesisPlugin):
    name = "exploding"

    def test(self, context):
        raise RuntimeError("boom in a plugin")


class ExplodingExplainer(ExplainerPlugin):
    name = "exploding-explainer"

    def explain(self, model, samples, targets, seed):
        raise ValueError("explainer broke")


def _registry_with_failing_plugins():
    module = types.ModuleType("failing_plugins")
    module.register_hypotheses = hookimpl(lambda: [Exploding])
    module.register_explainers = hookimpl(lambda: [ExplodingExplainer])
    return make_plugin_manager(extra_plugins=[module])


def test_audit_produces_every_part(write_plan, registry):
    plan = load_plan(write_plan(plan_text(IG, HYPS)), registry)
    outcome = run_audit(plan, registry, cache=Cache(None))
    r = outcome.results
    assert r["schema_version"] == "2.2"
    assert r["samples"]["n"] == 28 and r["samples"]["labelled"]
    assert 0 <= r["accuracy"]["value"] <= 1 and r["accuracy"]["ci"][0] <= r["accuracy"]["value"] <= r["accuracy"]["ci"][1]
    assert np.array(r["confusion_matrix"]).sum() == 28
    ig = r["explainers"]["integrated-gradients"]
    assert ig["status"] == "ok" and ig["n_samples"] == 4
    exp = outcome.explanations["integrated-gradients"]
    assert exp.maps.shape == (4, 32, 32) and exp.signed
    gray = r["hypotheses"]["grayscale"]
    assert gray["status"] == "ok" and gray["metric"] == "accuracy"
    assert gray["p_value_adjusted"] >= gray["p_value"]
    groups = r["hypotheses"]["group-accuracy"]
    tones = {row["group"] for row in groups["breakdown"]["skin_tone"]}
    assert len(tones) >= 3 and tones <= {"I", "II", "III", "IV", "V", "VI"}
    assert r["provenance"]["model"]["files"][0]["sha256"]
    assert r["failures"] == []
    json.dumps(r, allow_nan=False)  # strict JSON


def test_a_raising_plugin_is_recorded_and_the_rest_completes(write_plan):
    registry = _registry_with_failing_plugins()
    plan = load_plan(
        write_plan(plan_text(IG + "  - exploding-explainer\n", "  - exploding\n  - grayscale\n")), registry
    )
    r = run_audit(plan, registry, cache=Cache(None)).results
    assert r["explainers"]["exploding-explainer"]["status"] == "failed"
    assert r["hypotheses"]["exploding"]["status"] == "failed"
    assert r["explainers"]["integrated-gradients"]["status"] == "ok"
    assert r["hypotheses"]["grayscale"]["status"] == "ok"
    errors = {f["step"]: f["error"] for f in r["failures"]}
    assert errors == {
        "explainer exploding-explainer": "ValueError: explainer broke",
        "hypothesis exploding": "RuntimeError: boom in a plugin",
    }


def test_second_run_reuses_the_cache_and_computes_only_the_new_step(write_plan, registry, tmp_path):
    cache_dir = tmp_path / "cache"
    first = load_plan(write_plan(plan_text(IG, "  - grayscale\n")), registry)
    cache = Cache(cache_dir)
    r1 = run_audit(first, registry, cache=cache).results
    assert (cache.hits, cache.misses) == (0, 4)  # baseline, one explainer and its trust metrics, one hypothesis

    cache = Cache(cache_dir)
    r2 = run_audit(first, registry, cache=cache).results
    assert (cache.hits, cache.misses) == (4, 0)
    assert r2["hypotheses"]["grayscale"] == r1["hypotheses"]["grayscale"]
    assert r2["explainers"]["integrated-gradients"]["trust"] == r1["explainers"]["integrated-gradients"]["trust"]

    third = load_plan(write_plan(plan_text(IG, "  - grayscale\n  - group-accuracy\n"), "plan3.yaml"), registry)
    cache = Cache(cache_dir)
    run_audit(third, registry, cache=cache)
    assert (cache.hits, cache.misses) == (4, 1)  # only the new hypothesis ran

    changed = load_plan(write_plan(plan_text(IG.replace("4", "6"), "  - grayscale\n"), "plan4.yaml"), registry)
    cache = Cache(cache_dir)
    run_audit(changed, registry, cache=cache)
    assert (cache.hits, cache.misses) == (2, 2)  # new options: only that explainer (and its trust) recomputes


def test_a_corrupt_cache_entry_is_recomputed(write_plan, registry, tmp_path):
    cache_dir = tmp_path / "cache"
    plan = load_plan(write_plan(plan_text("", "  - grayscale\n")), registry)
    r1 = run_audit(plan, registry, cache=Cache(cache_dir)).results
    for npz in cache_dir.rglob("arrays.npz"):
        npz.write_bytes(b"garbage")
    cache = Cache(cache_dir)
    r2 = run_audit(plan, registry, cache=cache).results
    assert cache.hits == 0 and cache.misses == 2
    assert r2["hypotheses"] == r1["hypotheses"]


def test_a_tampered_cache_entry_is_recomputed_not_read_back(write_plan, registry, tmp_path):
    """The checksum covers the plain data too: an edited verdict or effect is never read into the results."""
    cache_dir = tmp_path / "cache"
    plan = load_plan(write_plan(plan_text("", "  - grayscale\n")), registry)
    r1 = run_audit(plan, registry, cache=Cache(cache_dir)).results
    tampered = 0
    for data in cache_dir.rglob("data.json"):
        text = data.read_text()
        if '"verdict"' in text:  # the hypothesis: its verdict flipped, its effect changed
            edited = text.replace('"verdict": "not supported"', '"verdict": "supported"', 1).replace("0.", "9.", 1)
            data.write_text(edited)
            tampered += edited != text
        else:  # the baseline (no plain data): its meta is not even a mapping
            (data.parent / "meta.json").write_text("[]")
            tampered += 1
    assert tampered == 2
    cache = Cache(cache_dir)
    r2 = run_audit(plan, registry, cache=cache).results
    assert cache.hits == 0 and cache.misses == 2
    assert r2["hypotheses"] == r1["hypotheses"]


def _tamper(entry: Path, how: str) -> None:
    import shutil

    if how == "meta not JSON":
        (entry / "meta.json").write_text("{not json")
    elif how == "meta a folder":
        (entry / "meta.json").unlink()
        (entry / "meta.json").mkdir()
    elif how == "meta without a checksum":
        (entry / "meta.json").write_text('{"format": 2, "sha256": null}')
    elif how == "data a folder":
        (entry / "data.json").unlink()
        (entry / "data.json").mkdir()
    elif how == "data missing":
        (entry / "data.json").unlink()
    elif how == "entry a file":
        shutil.rmtree(entry)
        entry.write_text("x")


def test_a_cache_entry_tampered_in_any_way_is_recomputed_and_the_run_goes_on(write_plan, registry, tmp_path):
    """Whatever was done to an entry's files, the run computes the step again and gives the same results."""
    import shutil

    plan = load_plan(write_plan(plan_text("", "  - grayscale\n")), registry)
    clean = tmp_path / "clean"
    r1 = run_audit(plan, registry, cache=Cache(clean)).results
    for how in ("meta not JSON", "meta a folder", "meta without a checksum", "data a folder", "data missing",
                "entry a file"):
        cache_dir = tmp_path / how.replace(" ", "-")
        shutil.copytree(clean, cache_dir)
        entries = [d for d in (cache_dir / "steps").glob("*/*") if d.is_dir()]
        assert len(entries) == 2
        for entry in entries:
            _tamper(entry, how)
        cache = Cache(cache_dir)
        r2 = run_audit(plan, registry, cache=cache).results
        assert (cache.hits, cache.misses) == (0, 2), how
        assert r2["hypotheses"] == r1["hypotheses"] and r2["accuracy"] == r1["accuracy"], how


def test_two_runs_on_one_cache_compute_each_step_once(write_plan, tmp_path):
    """Two processes at once on one cache: one computes each step, the other waits and reads it."""
    import json
    import subprocess
    import sys

    plan = write_plan(plan_text(IG, "  - grayscale\n"))
    driver = (
        "import sys, json\n"
        "from xai_audit.run.cache import Cache\nfrom xai_audit.plan import load_plan\n"
        "from xai_audit.registry import make_plugin_manager\nfrom xai_audit.audit import run_audit\n"
        "registry = make_plugin_manager()\ncache = Cache(sys.argv[2])\n"
        "r = run_audit(load_plan(sys.argv[1], registry), registry, cache=cache).results\n"
        "print(json.dumps({'hits': cache.hits, 'misses': cache.misses, 'hypotheses': r['hypotheses'],"
        " 'accuracy': r['accuracy']}))\n"
    )
    cache_dir = tmp_path / "shared-cache"
    procs = [subprocess.Popen([sys.executable, "-c", driver, str(plan), str(cache_dir)], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    # each step was computed by one run only: the two runs' computations add up to the entries in the cache
    entries = [d for d in (cache_dir / "steps").glob("*/*") if d.is_dir() and not d.name.startswith(".")]
    assert sum(o["misses"] for o in outs) == len(entries)
    assert outs[0]["hypotheses"] == outs[1]["hypotheses"] and outs[0]["accuracy"] == outs[1]["accuracy"]
    assert not list(cache_dir.rglob(".*-*"))  # no half-written entry left


def _numbers(results):
    r = dict(results)
    r.pop("run")  # how the run went: times, the cache, batch sizes
    return r


def test_two_runs_with_one_seed_give_the_same_numbers(write_plan, registry):
    plan = load_plan(write_plan(plan_text(IG, HYPS)), registry)
    a = run_audit(plan, registry, cache=Cache(None))
    b = run_audit(plan, registry, cache=Cache(None))
    assert _numbers(a.results) == _numbers(b.results)
    np.testing.assert_array_equal(a.explanations["integrated-gradients"].maps, b.explanations["integrated-gradients"].maps)


def test_labels_are_mapped_to_the_models_class_order(write_plan, registry):
    text = plan_text().replace("classes: [happy, sad,", "classes: [sad, happy,")
    r = run_audit(load_plan(write_plan(text), registry), registry, cache=Cache(None)).results
    assert r["classes"][:2] == ["sad", "happy"]
    per_class = {row["class"]: row["n"] for row in r["per_class"]}
    assert per_class["sad"] == per_class["happy"] == 4  # 28 balanced samples over 7 classes
