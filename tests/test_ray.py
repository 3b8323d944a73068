"""executor: ray gives the results a local run gives; without Ray, one clear line and exit 2."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import plan_text
from xai_audit.contract import batching
from xai_audit.run.cache import Cache
from xai_audit.cli import app
from xai_audit.errors import PlanError
from xai_audit.plan.parse import RAY_MISSING
from xai_audit.run.executors import _split_on_batches, merge_explanations
from xai_audit.plan import load_plan
from xai_audit.audit import run_audit
from xai_audit.contract.types import Explanation

EXPLAINERS = "  - integrated-gradients: {steps: 4}\n  - gradcam\n  - occlusion: {window: 8, stride: 8}\n"
HYPOTHESES = "  - grayscale\n  - luminance\n"
RAY = "runtime: {batch_size: 8, executor: ray, ray: {workers: 2}}\n"
LOCAL = "runtime: {batch_size: 8}\n"
#: fields that differ between any two runs (time, provenance) or name the executor (the plan)
IGNORED = {"run", "provenance", "plan"}
#: explainer scalars that said how a call was batched (now under run.steps, where they belong)
BATCHING = {"perturbations_per_eval", "images_per_pass", "internal_batch_size", "batch_size"}


def _plan(executor: str) -> str:
    return plan_text(EXPLAINERS, HYPOTHESES, extra=executor, n=40).replace("explain: {samples: 4}",
                                                                           "explain: {samples: 6}")


def _close(a, b, path="results"):
    """Equal, floats to 1e-5."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys differ: {set(a) ^ set(b)}"
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-5, nan_ok=True), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def ray_can_start():
    """Ray is installed and a local instance starts here; otherwise the Ray tests skip and say why."""
    ray = pytest.importorskip("ray")
    try:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # e.g. a sandbox without shared memory or local ports: not our bug to report
        pytest.skip(f"a local Ray instance cannot start on this machine: {type(exc).__name__}: {exc}")
    finally:
        if ray.is_initialized():
            ray.shutdown()


def test_ray_audit_equals_local_audit(write_plan, registry, monkeypatch, ray_can_start):
    # the probed best batch is timed, so it can differ between processes; fix it for both runs
    monkeypatch.setenv(batching.ENV_BATCH, "8")
    local = run_audit(load_plan(write_plan(_plan(LOCAL), "local.yaml"), registry), registry, cache=Cache(None))
    plan = load_plan(write_plan(_plan(RAY), "ray.yaml"), registry)
    assert plan.runtime.executor == "ray" and plan.runtime.ray.workers == 2
    distributed = run_audit(plan, registry, cache=Cache(None))

    a, b = local.results, distributed.results
    assert not a["failures"] and not b["failures"]
    assert a["samples"]["n"] == 40 and a["per_sample"] == b["per_sample"]
    assert a["accuracy"] == b["accuracy"] and a["confusion_matrix"] == b["confusion_matrix"]
    assert set(b["explainers"]) == {"integrated-gradients", "gradcam", "occlusion"}
    assert set(b["hypotheses"]) == {"grayscale", "luminance"}
    for results in (a, b):
        for entry in results["explainers"].values():
            entry["scalars"] = {k: v for k, v in entry["scalars"].items() if k not in BATCHING}
    _close({k: v for k, v in a.items() if k not in IGNORED}, {k: v for k, v in b.items() if k not in IGNORED})
    for name, exp in local.explanations.items():
        other = distributed.explanations[name]
        assert other.sample_ids == exp.sample_ids and np.array_equal(other.targets, exp.targets)
        np.testing.assert_allclose(other.maps, exp.maps, rtol=1e-5, atol=1e-5)
    import ray

    assert not ray.is_initialized()  # the audit started Ray, so it shut it down


def test_ray_missing_is_one_clear_line(write_plan, registry, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails, as when it is not installed
    path = write_plan(plan_text(extra=RAY))
    with pytest.raises(PlanError) as caught:
        load_plan(path, registry)
    assert caught.value.problems == [f"{path}:{_line_of(path, 'runtime:')}: runtime.executor: {RAY_MISSING}"]
    result = CliRunner().invoke(app, ["validate", "--no-load", str(path)])
    assert result.exit_code == 2
    assert "executor: ray needs `pip install xai-audit[ray]`" in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_ray_options_are_validated(write_plan, registry):
    path = write_plan(plan_text(extra="runtime: {executor: spark, ray: {workers: 0, gpus: 1}}\n"))
    with pytest.raises(PlanError) as caught:
        load_plan(path, registry)
    text = "\n".join(caught.value.problems)
    assert "runtime.executor" in text and "runtime.ray.workers" in text and "runtime.ray.gpus" in text
    plan = load_plan(write_plan(plan_text()), registry)
    assert plan.runtime.executor == "local" and plan.runtime.ray.address is None


def test_split_on_batches_keeps_whole_batches():
    assert _split_on_batches(0, 8, 2) == []
    assert _split_on_batches(5, 8, 2) == [(0, 5)]
    assert _split_on_batches(20, 8, 2) == [(0, 16), (16, 20)]
    assert _split_on_batches(32, 8, 2) == [(0, 16), (16, 32)]
    assert _split_on_batches(17, 4, 3) == [(0, 8), (8, 16), (16, 17)]


def test_merge_explanations():
    def part(ids, offset):
        n = len(ids)
        return Explanation(
            method="m", sample_ids=ids, targets=np.arange(n) + offset, maps=np.full((n, 2, 2), offset, np.float32),
            signed=True, scalars={"delta_mean": float(offset), "delta_max": float(offset), "window": 4.0},
            arrays={"per_sample": np.arange(n) + offset, "shown": np.zeros((1, 2)), "other": np.zeros(3)},
            tables={"rows": [{"id": i} for i in ids], "summary": [{"k": offset}, {"k": 0}, {"k": 1}]},
            notes=["same", f"shard {offset}"],
            figures=[{"kind": "images", "images": {"array": "shown"}}],
        )

    merged = merge_explanations([part(["a", "b"], 0), part(["c"], 10)])
    assert merged.sample_ids == ["a", "b", "c"] and merged.targets.tolist() == [0, 1, 10]
    assert merged.maps[:, 0, 0].tolist() == [0, 0, 10]
    assert merged.scalars == {"delta_mean": pytest.approx(10 / 3), "delta_max": 10.0, "window": 4.0}
    assert merged.arrays["per_sample"].tolist() == [0, 1, 10]
    assert merged.arrays["shown"].shape == (1, 2) and merged.arrays["other"].shape == (3,)
    assert [r["id"] for r in merged.tables["rows"]] == ["a", "b", "c"] and len(merged.tables["summary"]) == 3
    assert merged.notes == ["same", "shard 0", "shard 10"]


def _line_of(path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(text))


def test_a_local_ray_started_inside_a_step_outlives_the_step():
    """Ray kills what it started when the thread that started it ends (PR_SET_PDEATHSIG), and a step runs on a
    thread of its own: started there (a re-run whose earlier steps came from the cache), Ray died with the step."""
    import threading
    import types

    from xai_audit.limits import run_with_limit
    from xai_audit.run.executors import _RayKeeper

    started_on: list[threading.Thread] = []
    fake_ray = types.SimpleNamespace(init=lambda **options: started_on.append(threading.current_thread()))
    step = []
    keeper = run_with_limit(lambda: step.append(threading.current_thread()) or _RayKeeper(fake_ray, num_cpus=1),
                            60, "a step")
    assert not step[0].is_alive()  # the step's thread has ended
    assert started_on[0] is not step[0] and started_on[0].is_alive()  # Ray's thread has not
    keeper.release()
    started_on[0].join(5)
    assert not started_on[0].is_alive()

    def refuse(**options):
        raise RuntimeError("no shared memory here")

    with pytest.raises(RuntimeError, match="no shared memory"):
        _RayKeeper(types.SimpleNamespace(init=refuse))
