"""Faults: a hanging plugin is stopped by its timeout, out-of-memory halves the batch,
a run killed mid-way resumes from the cache to the same results, and a broken plan never crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import plan_text
from xai_audit import hookimpl
from xai_audit.run.cache import Cache
from xai_audit.errors import PlanError
from xai_audit.limits import with_halving_batch
from xai_audit.plan import load_plan, parse_plan
from xai_audit.registry import make_plugin_manager
from xai_audit.audit import run_audit
from xai_audit.contract.discovery import DiscovererPlugin
from xai_audit.contract.types import ExplainerPlugin, Explanation, HypothesisPlugin


class Hangs(HypothesisPlugin):
    name = "hangs"

    def test(self, context):
        while True:
            time.sleep(0.05)


def test_a_hanging_plugin_is_stopped_by_its_timeout_and_recorded(write_plan):
    module = types.ModuleType("hanging")
    module.register_hypotheses = hookimpl(lambda: [Hangs])
    registry = make_plugin_manager(extra_plugins=[module])
    plan = load_plan(write_plan(plan_text("", "  - hangs: {timeout: 0.5}\n  - grayscale\n")), registry)
    start = time.perf_counter()
    results = run_audit(plan, registry, cache=Cache(None)).results
    assert time.perf_counter() - start < 60
    assert results["hypotheses"]["hangs"]["status"] == "failed"
    assert results["hypotheses"]["grayscale"]["status"] == "ok"
    (failure,) = results["failures"]
    assert failure["step"] == "hypothesis hangs" and "time limit of 0.5 s" in failure["error"]
    assert results["plan"]["hypotheses"][0] == {"hangs": {"timeout": 0.5}}


class StuckInNativeCode(HypothesisPlugin):
    """Poisons the model (a forward hook that raises), then blocks in one C call that no exception reaches."""

    name = "stuck"

    def test(self, context):
        def poisoned(*_):
            raise RuntimeError("the stuck step's hook is still on the model")

        next(iter(context.model.layers().values())).register_forward_hook(poisoned)
        time.sleep(30)  # one C call: an asynchronous exception waits for it to return


def test_a_step_stuck_in_native_code_is_left_behind_under_the_audit_wide_limit(write_plan):
    module = types.ModuleType("stuck")
    module.register_hypotheses = hookimpl(lambda: [StuckInNativeCode, Hangs])
    registry = make_plugin_manager(extra_plugins=[module])
    plan = load_plan(write_plan(plan_text("", "  - stuck\n  - hangs\n  - grayscale\n",
                                          extra="runtime: {step_timeout: 1}\n")), registry)
    start = time.perf_counter()
    results = run_audit(plan, registry, cache=Cache(None)).results
    assert time.perf_counter() - start < 25  # two limits and their grace, not the 30 s sleep
    assert [results["hypotheses"][n]["status"] for n in ("stuck", "hangs", "grayscale")] == ["failed", "failed", "ok"]
    stuck, hangs = results["failures"]
    assert "stuck in native code" in stuck["error"] and "time limit of 1 s" in stuck["error"]
    # a Python loop is stopped where it runs, not left behind
    assert "time limit of 1 s" in hangs["error"] and "native" not in hangs["error"]
    # grayscale ran on a model loaded again, not on the one the stuck step left a hook on
    assert results["hypotheses"]["grayscale"]["n"] == 28


def test_a_bad_timeout_is_a_located_plan_error(registry):
    with pytest.raises(PlanError, match=r"hypotheses\[0\]\.grayscale\.timeout: must be a positive number"):
        parse_plan(plan_text("", "  - grayscale: {timeout: -1}\n"), registry, filename="p.yaml")


def test_out_of_memory_halves_the_batch_and_retries(caplog):
    import torch

    sizes = []

    def run(size):
        sizes.append(size)
        if size > 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return size

    with caplog.at_level("WARNING", logger="xai_audit"):
        assert with_halving_batch(run, 64, "baseline predictions") == 16
    assert sizes == [64, 32, 16]
    assert "retrying with batch size 16" in caplog.text
    with pytest.raises(ValueError):
        with_halving_batch(lambda size: (_ for _ in ()).throw(ValueError("not memory")), 8, "x")


def _strip_times(results):
    return {k: v for k, v in results.items() if k != "run"}


def test_killed_mid_run_resumes_from_the_cache_to_the_same_results(write_plan, tmp_path):
    """SIGKILL during the explainers; the next run reuses what was cached and ends as a clean run would."""
    plan = write_plan(plan_text("  - integrated-gradients: {steps: 3}\n  - slow-explainer\n", "  - grayscale\n"))
    (tmp_path / "slowplug.py").write_text(textwrap.dedent(
        """
        import time, numpy as np
        from xai_audit import hookimpl, ExplainerPlugin, Explanation

        class Slow(ExplainerPlugin):
            name = "slow-explainer"
            def explain(self, model, samples, targets, seed):
                import os
                if os.environ.get("SLOW_HANG"):
                    open(os.environ["SLOW_HANG"], "w").write("started")
                    time.sleep(600)
                n, h, w = len(samples), *samples[0].image.shape[-2:]
                return Explanation(method=self.name, sample_ids=[s.id for s in samples], targets=np.asarray(targets),
                                   maps=np.ones((n, h, w), np.float32), signed=False)

        @hookimpl
        def register_explainers():
            return [Slow]
        """
    ))
    driver = textwrap.dedent(
        f"""
        import sys, json; sys.path.insert(0, {str(tmp_path)!r})
        import slowplug
        from xai_audit.run.cache import Cache
        from xai_audit.plan import load_plan
        from xai_audit.registry import make_plugin_manager
        from xai_audit.audit import run_audit
        registry = make_plugin_manager(extra_plugins=[slowplug])
        plan = load_plan({str(plan)!r}, registry)
        outcome = run_audit(plan, registry, cache=Cache(sys.argv[1]))
        print(json.dumps(outcome.results))
        """
    )
    marker = tmp_path / "started"
    env = {**os.environ, "SLOW_HANG": str(marker)}
    proc = subprocess.Popen([sys.executable, "-c", driver, str(tmp_path / "cache")], env=env, stdout=subprocess.PIPE)
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the run never reached the slow explainer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    env.pop("SLOW_HANG")
    resumed = subprocess.run([sys.executable, "-c", driver, str(tmp_path / "cache")], env=env, capture_output=True, text=True, check=True)
    clean = subprocess.run([sys.executable, "-c", driver, str(tmp_path / "fresh")], env=env, capture_output=True, text=True, check=True)
    r, c = json.loads(resumed.stdout), json.loads(clean.stdout)
    assert r["run"]["cache"]["hits"] >= 2  # baseline and integrated-gradients came from the killed run
    assert _strip_times(r) == _strip_times(c)
    assert not list((tmp_path / "cache").rglob(".*-*"))  # no half-written entry left visible


PLAN_KEYS = st.sampled_from(["seed", "model", "models", "dataset", "explainers", "hypotheses", "explain", "report",
                             "runtime", "checks", "regions", "sed", "modle"])
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.dictionaries(PLAN_KEYS, VALUES, max_size=6), field=PLAN_KEYS, value=VALUES)
def test_fuzzed_plans_never_crash_and_always_say_where(registry, data, field, value):
    import yaml

    base = yaml.safe_load(plan_text("  - integrated-gradients\n", "  - grayscale\n"))
    base.update(data)
    base[field] = value
    text = yaml.safe_dump(base)
    try:
        parse_plan(text, registry, filename="fuzz.yaml")
    except PlanError as exc:
        assert exc.problems and all(p.startswith("fuzz.yaml") for p in exc.problems), exc.problems


def test_a_failed_step_keeps_its_whole_traceback_in_the_run_log(write_plan, tmp_path):
    from typer.testing import CliRunner

    from xai_audit.cli import app

    plan = write_plan(plan_text("", "  - transform: {callable: 'json:loads', description: parsed as JSON}\n"))
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["run", str(plan), "--out", str(out), "--no-cache", "-q"])
    assert result.exit_code == 1, result.output  # a planned step did not run (on_step_failure: fail)
    log = (out / "run.log").read_text()
    assert log.startswith("hypothesis transform (transform") and "Traceback (most recent call last)" in log
    assert "json" in log and "TypeError" in log
    results = json.loads((out / "results.json").read_text())
    (failure,) = results["failures"]
    assert "Traceback" not in failure["traceback"] and "_traceback_full" not in failure  # one line in results.json
    debug = CliRunner().invoke(app, ["--debug", "run", str(plan), "--out", str(tmp_path / "again"), "--no-cache", "-q"])
    assert debug.exit_code == 1 and "Traceback (most recent call last)" in debug.stderr


class HangsWhenAskedAgain(ExplainerPlugin):
    """Explains once; the trust metrics' further calls (on a randomised model, ...) never return."""

    name = "hangs-when-asked-again"
    needs_gradients = False
    calls = 0

    def explain(self, model, samples, targets, seed):
        HangsWhenAskedAgain.calls += 1
        while HangsWhenAskedAgain.calls > 1:
            time.sleep(0.05)
        return Explanation(method=self.name, sample_ids=[s.id for s in samples], targets=np.asarray(targets),
                           maps=np.stack([s.image.mean(axis=0) for s in samples]).astype(np.float32), signed=False)


def test_the_trust_metrics_of_an_explainer_are_stopped_by_its_time_limit(write_plan):
    """The trust metrics run the model and the explainer again: a hang there is stopped and recorded like a
    step's, and the explainer's maps stand."""
    module = types.ModuleType("hangs_again")
    module.register_explainers = hookimpl(lambda: [HangsWhenAskedAgain])
    registry = make_plugin_manager(extra_plugins=[module])
    plan = load_plan(write_plan(plan_text("  - hangs-when-asked-again: {timeout: 1}\n", "  - grayscale\n")),
                     registry)
    results = run_audit(plan, registry, cache=Cache(None)).results
    assert results["explainers"]["hangs-when-asked-again"]["status"] == "ok"
    (failure,) = results["failures"]
    assert failure["step"] == "trust hangs-when-asked-again" and "time limit of 1 s" in failure["error"]
    assert results["hypotheses"]["grayscale"]["status"] == "ok"


class StuckDiscoverer(DiscovererPlugin):
    """Poisons the model like StuckInNativeCode, then blocks in one C call."""

    name = "stuck-discoverer"

    def discover(self, context):
        def poisoned(*_):
            raise RuntimeError("the stuck discoverer's hook is still on the model")

        next(iter(context.model.layers().values())).register_forward_hook(poisoned)
        time.sleep(8)  # one C call: an asynchronous exception waits for it to return
        return []

    def intervention(self, spec):
        return lambda images, samples: images


def test_a_discoverer_stuck_in_native_code_leaves_the_hypotheses_a_model_loaded_afresh(write_plan):
    module = types.ModuleType("stuck_discoverer")
    module.register_discoverers = hookimpl(lambda: [StuckDiscoverer])
    registry = make_plugin_manager(extra_plugins=[module])
    plan = load_plan(write_plan(plan_text("", "  - grayscale\n", n=42,
                                          extra="discoverers:\n  - stuck-discoverer\nruntime: {step_timeout: 1}\n")),
                     registry)
    results = run_audit(plan, registry, cache=Cache(None)).results
    (stuck,) = results["failures"]
    assert stuck["step"] == "discoverer stuck-discoverer" and "stuck in native code" in stuck["error"]
    assert results["hypotheses"]["grayscale"]["status"] == "ok" and results["hypotheses"]["grayscale"]["n"] == 42
