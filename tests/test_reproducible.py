"""Reproducible audits (issue 23): the same plan on the same inputs gives the same results.json, byte for byte,
outside ``run`` (how the run went: times, batch sizes, the cache, the machine), whatever the batch sizes;
``xai-audit verify --rerun`` says so, or names every field that differs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import torch
from typer.testing import CliRunner

from conftest import EMOTIONS
from xai_audit.cli import app
from xai_audit.contract import batching
from xai_audit.verify.rerun import differences

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "xai_audit" / "schema" / "results.schema.json").read_text())

#: two convolutions: the layout rule sends its images channels-last (on a CPU), as it does the demo CNN's
SMALL_CNN = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Small(nn.Module):
        def __init__(self, n_classes=7):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(16, n_classes)

        def forward(self, x):
            return self.head(torch.flatten(self.pool(self.features(x)), 1))

    def make(n_classes=7):
        return Small(n_classes)
    """
)

PLAN = textwrap.dedent(
    f"""\
    seed: 5
    model: {{adapter: torch, module: small_cnn.py:make, weights: weights.pt, classes: [{", ".join(EMOTIONS)}]}}
    dataset: {{loader: synthetic-faces, split: test, n: 40, size: 32}}
    explain: {{samples: 5, trust: {{steps: 6, sanity_samples: 2, sanity_stages: 2}}}}
    explainers:
      - integrated-gradients: {{steps: 6, baseline: blurred}}
      - occlusion: {{window: 8, stride: 4}}
      - lime: {{samples: 40}}
      - saliency
      - gradcam
    hypotheses:
      - grayscale
      - luminance: {{factor: 0.3}}
      - group-accuracy: {{by: [skin_tone], min_group_size: 2}}
    report: {{title: Reproducible, formats: [json]}}
    """
)


@pytest.fixture
def plan(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "small_cnn.py").write_text(SMALL_CNN)
    namespace: dict = {}
    exec(SMALL_CNN, namespace)
    torch.manual_seed(0)
    torch.save(namespace["make"]().state_dict(), tmp_path / "weights.pt")
    (tmp_path / "plan.yaml").write_text(PLAN)
    # other work committed while the test runs must not show as a difference in provenance
    monkeypatch.setattr("xai_audit.load.provenance.git_commit", lambda: "0" * 40)
    return tmp_path / "plan.yaml"


def _run(plan: Path, out: Path, *extra: str) -> dict:
    result = CliRunner().invoke(app, ["run", str(plan), "--out", str(out), "-q", *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text())


def _found(results: dict) -> str:
    """Everything outside ``run``, as the bytes a reader compares."""
    return json.dumps({k: v for k, v in results.items() if k != "run"}, sort_keys=True, ensure_ascii=False)


def test_batch_sizes_change_nothing_outside_run(plan, tmp_path, monkeypatch):
    runs = {}
    for sizes in ("2", "forward=64,backward=48"):
        monkeypatch.setenv(batching.ENV_BATCH, sizes)
        runs[sizes] = _run(plan, tmp_path / f"out-{len(runs)}", "--no-cache")
    small, large = runs.values()
    assert not small["failures"] and set(small["explainers"]) == {"integrated-gradients", "occlusion", "lime",
                                                                 "saliency", "gradcam"}
    assert _found(small) == _found(large)  # byte for byte: maps, trust scores, deltas, localisation, p-values
    for results in (small, large):
        jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(results)

    # the batch sizes were really different, and are recorded where they belong
    assert {(b["mode"], b["size"], b["source"]) for b in small["run"]["batching"]} == {
        ("forward", 2, "environment"), ("backward", 2, "environment")}
    assert {(b["mode"], b["size"]) for b in large["run"]["batching"]} == {("forward", 64), ("backward", 48)}
    assert {b["layout"] for b in large["run"]["batching"]} == {"channels-last"}  # two convolutions, a CPU
    steps = small["run"]["steps"]
    for name in ("baseline", "explainer integrated-gradients", "trust integrated-gradients", "explainer lime",
                 "trust lime", "hypothesis grayscale", "hypothesis group-accuracy"):
        assert steps[name]["seconds"] >= 0 and steps[name]["cached"] is False, name
    assert steps["explainer integrated-gradients"]["batching"]["points_per_pass"] == 2
    assert large["run"]["steps"]["explainer occlusion"]["batching"]["copies_per_pass"] == 64
    assert steps["explainer occlusion"]["batching"]["passes"] > large["run"]["steps"]["explainer occlusion"]["batching"]["passes"]

    # nothing that says how the run went is left outside run
    assert not {"started", "finished", "cache"} & set(small)
    assert "platform" not in small["provenance"]["environment"]
    for entry in small["explainers"].values():
        assert not {"internal_batch_size", "images_per_pass", "perturbations_per_eval", "batch_size"} & set(entry["scalars"])
        assert not any(" s)" in note or "took" in note for note in entry["notes"])


def test_the_schema_keeps_run_facts_under_run():
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    good = {
        "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:00:05+00:00", "seconds": 5.0,
        "machine": {"host": "h", "platform": "Linux", "cpu": "c", "torch": "2", "torch_threads": 2, "device": "cpu",
                    "numerics": "abc"},
        "executor": {"kind": "local", "workers": 1}, "cache": {"dir": None, "hits": 0, "misses": 3},
        "batching": [{"mode": "forward", "image_shape": [3, 8, 8], "size": 16, "source": "probe",
                      "layout": "standard", "batch_invariant": True}],
        "steps": {"baseline": {"seconds": 0.1, "cached": False},
                  "explainer occlusion": {"seconds": 1.5, "cached": False, "batching": {"copies_per_pass": 16}}},
    }
    run_schema = {**SCHEMA["properties"]["run"], "$defs": SCHEMA["$defs"]}
    jsonschema.Draft202012Validator(run_schema, format_checker=jsonschema.FormatChecker()).validate(good)
    for broken in ({**good, "seconds": -1}, {**good, "batching": [{**good["batching"][0], "source": "timing"}]},
                   {k: v for k, v in good.items() if k != "machine"}, {**good, "steps": {"baseline": {"cached": True}}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft202012Validator(run_schema, format_checker=jsonschema.FormatChecker()).validate(broken)
    # top level: run is required, and a run fact outside it is refused
    assert "run" in SCHEMA["required"] and not {"started", "finished", "cache"} & set(SCHEMA["required"])
    for key in ("started", "finished", "cache"):
        errors = list(validator.iter_errors({key: "x"}))
        assert any(e.validator == "not" for e in errors), key


def test_verify_rerun_reproduces_a_fresh_report_and_names_what_differs(plan, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    first = _run(plan, out, "--cache-dir", str(cache))
    runner = CliRunner()

    again = runner.invoke(app, ["verify", "--rerun", str(out), "--no-cache"])
    assert again.exit_code == 0, again.output
    assert "reproduced: byte for byte" in again.output and "the same machine" in again.output

    # a hypothesis option of the recorded plan changes: the re-run computes another effect, and names it
    results = json.loads((out / "results.json").read_text())
    results["plan"]["hypotheses"][1]["luminance"]["factor"] = 0.6
    (out / "results.json").write_text(json.dumps(results, indent=2))
    changed = runner.invoke(app, ["verify", "--rerun", str(out), "--cache-dir", str(cache)])
    assert changed.exit_code == 1, changed.output
    lines = [line for line in changed.output.splitlines() if line.startswith("differs")]
    assert any(line.startswith("differs  hypotheses.luminance.options.factor: report 0.3, rerun 0.6") for line in lines)
    assert any(line.startswith("differs  hypotheses.luminance.") and ".options." not in line for line in lines), lines
    assert not any(".grayscale." in line or line.startswith("differs  explainers.") for line in lines)  # nothing else

    # one number of the report changes, and the report says it ran on another machine: floats within a tolerance
    results = json.loads(json.dumps(first))
    results["accuracy"]["value"] += 0.25
    results["explainers"]["integrated-gradients"]["scalars"]["convergence_delta_mean"] *= 1 + 1e-7  # within rtol
    results["run"]["machine"].update(numerics="another", cpu="another cpu")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    other = runner.invoke(app, ["verify", "--rerun", str(out), "--cache-dir", str(cache)])
    assert other.exit_code == 1, other.output
    assert "floats compared within rtol 1e-05, atol 1e-08" in other.output and "another machine: cpu" in other.output
    lines = [line for line in other.output.splitlines() if line.startswith("differs")]
    assert len(lines) == 1 and lines[0].startswith("differs  accuracy.value: report "), other.output


def test_a_run_reuses_the_batch_sizes_of_an_earlier_report(plan, tmp_path, monkeypatch):
    monkeypatch.setenv(batching.ENV_BATCH, "forward=6,backward=10")
    first = _run(plan, tmp_path / "first", "--no-cache")
    monkeypatch.delenv(batching.ENV_BATCH)
    result = CliRunner().invoke(app, ["run", str(plan), "--out", str(tmp_path / "second"), "-q", "--no-cache",
                                      "--batch-sizes-from", str(tmp_path / "first")])
    assert result.exit_code == 0, result.output
    assert "batch sizes from" in result.output and "backward=10,forward=6" in result.output
    second = json.loads((tmp_path / "second" / "results.json").read_text())
    assert {(b["mode"], b["size"]) for b in second["run"]["batching"]} == {("forward", 6), ("backward", 10)}
    assert second["run"]["steps"]["explainer integrated-gradients"]["batching"]["points_per_pass"] == 10
    assert _found(second) == _found(first)
    import os

    assert batching.ENV_BATCH not in os.environ  # the command put the environment back


def test_a_check_may_not_read_run(write_plan, registry):
    from xai_audit.errors import PlanError
    from xai_audit.plan import load_plan

    from conftest import plan_text

    with pytest.raises(PlanError, match="`run` says how the audit ran"):
        load_plan(write_plan(plan_text(extra="checks:\n  - run.cache.hits > 0\n")), registry)


# --------------------------------------------------------------------------- the rules underneath


class _Adapter:
    def __init__(self, module: torch.nn.Module):
        self.module, self.device = module.eval(), "cpu"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images)


class _LeaksAcrossTheBatch(torch.nn.Module):
    """Each image's output moves with the others in its pass (as some GPU kernels and BLAS builds make it)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).mean(dim=(2, 3))
        return self.head(h) + 1e-3 * h.mean()


class _PerPixel(torch.nn.Module):
    """Each image's output is computed from its own pixels alone, by the same operations at any batch size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(2 * x - 1).mean(dim=(2, 3))[:, :2]


def test_the_layout_is_a_rule_and_a_batch_dependent_model_gets_a_fixed_batch(monkeypatch):
    monkeypatch.delenv(batching.ENV_BATCH, raising=False)
    one_conv = _Adapter(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2)))
    one_conv.forward(torch.zeros(1, 3, 8, 8))
    two_convs = _Adapter(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3),
                                             torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2)))
    assert not batching.prefers_channels_last(one_conv, (3, 8, 8), backward=True)
    assert batching.prefers_channels_last(two_convs, (3, 8, 8), backward=False)
    assert not batching.prefers_channels_last(two_convs, (16,), backward=False)  # not an image

    leaky = _Adapter(_LeaksAcrossTheBatch())
    # whether a conv's kernels give the same bits at every batch size depends on the CPU (with AVX-512 oneDNN
    # picks kernels by batch size; with AVX2 not): the check must say what the hardware does
    x = torch.rand((16, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        whole = two_convs.forward(x)
        measured = all(torch.equal(two_convs.forward(x[:s]), whole[:s]) for s in (2, 3))
    assert batching.batch_invariant(two_convs, (3, 8, 8), False, 16, True) is measured
    assert batching.batch_invariant(_Adapter(_PerPixel()), (3, 8, 8), False, 16, True)
    assert batching.batch_invariant(_Adapter(_PerPixel()), (3, 8, 8), True, 16, False)
    assert not batching.batch_invariant(leaky, (3, 8, 8), False, 16, False)
    batching.track_decisions()
    size = batching.best_batch_size(leaky, (3, 8, 8), backward=False, max_batch=64)
    assert size == batching.fixed_batch_size(leaky, (3, 8, 8), backward=False, max_batch=64)
    (decision,) = batching.batch_decisions(leaky)
    assert decision["source"] == "fixed" and decision["batch_invariant"] is False and decision["size"] == size


def test_differences_are_exact_on_one_machine_and_within_a_tolerance_on_another():
    report = {"a": 1.0, "b": [1, 2.5], "run": {"seconds": 3}, "c": {"d": "x"}}
    rerun = {"a": 1.0 + 1e-9, "b": [1.0, 2.5], "run": {"seconds": 4}, "c": {"d": "x", "e": None}}
    exact = {d.path for d in differences(report, rerun)}
    assert exact == {"a", "b[0]", "c.e"}  # 1 and 1.0 are other bytes; run is never compared
    assert {d.path for d in differences(report, rerun, exact=False)} == {"c.e"}
