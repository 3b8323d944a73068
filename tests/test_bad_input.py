"""Bad input gets one clear line naming the file, sample or field, exit status 2, no traceback,
and no report left behind; with `on_bad_sample: skip` the audit goes on and lists what it left out."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import EMOTIONS, TINY_MODEL
from corpus.images import CASES, _rgb
from xai_audit.cli import app

runner = CliRunner()
CLASSES = "[" + ", ".join(EMOTIONS) + "]"


def _folder(tmp_path: Path, bad: str | None = None, *, on_bad: str = "fail", csv_rows: str | None = None) -> Path:
    (tmp_path / "tiny_model.py").write_text(TINY_MODEL)
    namespace: dict = {}
    exec(TINY_MODEL, namespace)
    torch.manual_seed(0)
    torch.save(namespace["make"]().state_dict(), tmp_path / "weights.pt")
    data = tmp_path / "data"
    data.mkdir()
    rows = ["path,label,skin_tone"]
    for i in range(6):
        _rgb(i).save(data / f"ok{i}.png")
        rows.append(f"ok{i}.png,{EMOTIONS[i % 7]},{'I' if i % 2 else 'IV'}")
    if bad is not None:
        name, writer, _ = CASES[bad]
        writer(data / name)
        rows.append(f"{name},happy,I")
    (data / "meta.csv").write_text(csv_rows or "\n".join(rows) + "\n")
    (tmp_path / "plan.yaml").write_text(
        f"model: {{adapter: torch, module: tiny_model.py:make, weights: weights.pt, classes: {CLASSES}}}\n"
        f"dataset: {{loader: image-folder, path: data, metadata: data/meta.csv, size: 32, on_bad_sample: {on_bad}}}\n"
        "hypotheses:\n  - grayscale\n"
    )
    return tmp_path / "plan.yaml"


def _run(plan: Path, out: Path):
    return runner.invoke(app, ["run", str(plan), "--out", str(out), "--no-cache", "-q"])


@pytest.mark.parametrize("case", [c for c, (_, _, kind) in CASES.items() if kind == "error"])
def test_a_bad_image_stops_the_audit_with_one_line_naming_it(case, tmp_path):
    plan = _folder(tmp_path, case)
    out = tmp_path / "out"
    result = _run(plan, out)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert CASES[case][0] in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize("case", [c for c, (_, _, kind) in CASES.items() if kind == "error"])
def test_with_skip_the_audit_goes_on_and_lists_the_bad_image(case, tmp_path):
    plan = _folder(tmp_path, case, on_bad="skip")
    out = tmp_path / "out"
    result = _run(plan, out)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["samples"]["n"] == 6
    (skipped,) = results["skipped_samples"]
    assert CASES[case][0] in skipped["error"]
    assert "Samples left out" in (out / "report.html").read_text()


@pytest.mark.parametrize("case", [c for c, (_, _, kind) in CASES.items() if kind == "ok"])
def test_unusual_but_valid_images_are_read(case, tmp_path):
    plan = _folder(tmp_path, case)
    result = _run(plan, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "results.json").read_text())["samples"]["n"] == 7


def test_a_label_not_among_the_models_classes(tmp_path):
    plan = _folder(tmp_path, csv_rows="path,label\nok0.png,happy\nok1.png,bored\n")
    result = _run(plan, tmp_path / "out")
    assert result.exit_code == 2 and "'bored'" in result.stderr and result.stderr.count("\n") == 1


def test_missing_labels_still_explain_and_say_accuracy_cannot_be_computed(tmp_path):
    plan = _folder(tmp_path, csv_rows="path,label\nok0.png,\nok1.png,\nok2.png,\n")
    result = _run(plan, tmp_path / "out")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["accuracy"] is None and results["hypotheses"]["grayscale"]["status"] == "ok"
    assert "cannot be computed" in (tmp_path / "out" / "report.html").read_text()


def _model_plan(tmp_path: Path, forward: str, classes: str = CLASSES) -> Path:
    (tmp_path / "odd_model.py").write_text(
        "import torch\n"
        "class Odd(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 7, 3)\n"
        "        self.calls = 0\n"
        "    def forward(self, x):\n"
        "        self.calls += 1\n"
        "        y = self.conv(x).mean(dim=(2, 3))\n"
        f"        {forward}\n"
        "def make():\n    return Odd()\n"
    )
    (tmp_path / "plan.yaml").write_text(
        f"model: {{adapter: torch, module: odd_model.py:make, classes: {classes}}}\n"
        "dataset: {loader: synthetic-faces, n: 14, size: 32}\n"
    )
    return tmp_path / "plan.yaml"


@pytest.mark.parametrize(
    "forward, message",
    [
        ("return y[:, :3]", "expected (batch, 7) for 7 classes"),
        ("return y * float('nan')", "NaN or infinite"),
        ("return y / 0.0", "NaN or infinite"),
        ("y[:, 0] = float('-inf'); return y", "NaN or infinite scores (first on sample"),
        ("return y if self.calls < 2 else y[None]", "expected (batch, 7)"),
    ],
)
def test_models_that_misbehave(tmp_path, forward, message):
    result = _run(_model_plan(tmp_path, forward), tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_a_model_that_raises_on_some_batches(tmp_path):
    plan = _model_plan(tmp_path, "if self.calls > 1: raise RuntimeError('batch 2 broke')\n        return y")
    result = _run(plan, tmp_path / "out")
    assert result.exit_code == 2 and "batch 2 broke" in result.stderr and result.stderr.count("\n") == 1


def test_fewer_model_classes_than_the_data_set(tmp_path):
    plan = _model_plan(tmp_path, "return y[:, :3]", classes="[happy, sad, neutral]")
    (tmp_path / "odd_model.py").write_text((tmp_path / "odd_model.py").read_text().replace("Conv2d(3, 7, 3)", "Conv2d(3, 3, 3)"))
    result = _run(plan, tmp_path / "out")
    assert result.exit_code == 2 and "'angry' is not among the model's classes" in result.stderr


def test_validate_refuses_data_whose_classes_the_model_lacks_as_run_does(tmp_path):
    plan = _model_plan(tmp_path, "return y[:, :3]", classes="[happy, sad, neutral]")
    (tmp_path / "odd_model.py").write_text((tmp_path / "odd_model.py").read_text().replace("Conv2d(3, 7, 3)", "Conv2d(3, 3, 3)"))
    result = CliRunner().invoke(app, ["validate", str(plan)])
    assert result.exit_code == 2 and "'angry' is not among the model's classes" in result.stderr


def test_a_model_that_returns_nan_only_on_changed_images_fails_that_hypothesis(tmp_path):
    # NaN on the darkened faces only: the luminance test cannot be computed, and says so
    plan = _model_plan(tmp_path, "return torch.where(x.mean() < 0.2, y * float('nan'), y)")
    plan.write_text(plan.read_text() + "hypotheses:\n  - luminance: {factor: 0.2}\n  - grayscale\n")
    result = _run(plan, tmp_path / "out")
    # the whole report is written, and the run says a planned step did not run (exit 1, not bad input)
    assert result.exit_code == 1, result.output
    assert "INCOMPLETE: 1 planned step(s) did not run: hypothesis luminance" in result.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["hypotheses"]["luminance"]["status"] == "failed"
    assert results["hypotheses"]["grayscale"]["status"] == "ok"
    (failure,) = results["failures"]
    assert failure["step"] == "hypothesis luminance" and "NaN or infinite scores" in failure["error"]


def test_a_model_whose_forward_never_returns_does_not_hang_validate(tmp_path, monkeypatch):
    import xai_audit.load.loading as loading

    monkeypatch.setattr(loading, "FIRST_PASS_LIMIT_S", 1.0)
    plan = _model_plan(tmp_path, "import time; time.sleep(60); return y")
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["validate", str(plan)])
    assert time.perf_counter() - start < 30
    assert result.exit_code == 2 and "did not go through the model within 1 s" in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_model_that_stops_returning_after_its_first_pass_does_not_hang_run(tmp_path):
    """The first pass goes through; then the baseline predictions never return: the step limit stops them."""
    plan = _model_plan(tmp_path, "import time\n        while self.calls > 1: time.sleep(0.05)\n        return y")
    plan.write_text(plan.read_text() + "runtime: {step_timeout: 1}\nhypotheses:\n  - grayscale\n")
    result = _run(plan, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert "the model's predictions on the 14 audited images did not finish within 1 s (runtime.step_timeout)" in line
    assert not (tmp_path / "out").exists()


def test_a_first_pass_stuck_in_native_code_is_one_line(tmp_path):
    """One C call that no exception reaches (time.sleep): left behind, and still one error line, no warning."""
    plan = _model_plan(tmp_path, "import time; time.sleep(6); return y")
    plan.write_text(plan.read_text() + "runtime: {step_timeout: 1}\n")
    result = CliRunner().invoke(app, ["validate", str(plan)])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and "did not go through the model within 1 s" in line


def test_a_huge_class_name_in_an_error_is_cut_to_one_short_line(tmp_path):
    name = "q" * 100_000
    plan = _folder(tmp_path)
    (tmp_path / "data" / "meta.csv").write_text(f"path,label\nok0.png,{name}\nok1.png,happy\n")
    result = _run(plan, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and "q" * 299 + "…" in line and "q" * 300 not in line, line[:300]
    assert len(line) < 2100
    assert not (tmp_path / "out").exists()


def test_a_printed_line_is_one_line_of_bounded_length():
    from xai_audit.cli import one_line

    assert one_line("batch 2 broke\nsee above") == "batch 2 broke\\nsee above"
    assert one_line("a short message naming data/x.png") == "a short message naming data/x.png"
    long = one_line("class " + "x" * 1000 + " " + "word " * 1000)
    assert "x" * 300 + "…" in long and "x" * 301 not in long and len(long) < 2100
