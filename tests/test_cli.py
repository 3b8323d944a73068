from __future__ import annotations

import json

from typer.testing import CliRunner

from conftest import plan_text
from xai_audit.cli import app

runner = CliRunner()


def test_help_on_every_command():
    for command in ([], ["run"], ["validate"], ["plugins"], ["demo"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


def test_plugins_lists_kind_name_version_package():
    result = runner.invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    for word in ("model-adapter", "torch", "synthetic-faces", "integrated-gradients", "grayscale", "xai-audit"):
        assert word in result.output


def test_validate_good_and_bad(write_plan):
    good = write_plan(plan_text("  - integrated-gradients\n"))
    result = runner.invoke(app, ["validate", str(good)])
    assert result.exit_code == 0 and "valid" in result.output

    bad = write_plan(plan_text("  - integrated-gradients: {stpes: 3}\n"), "bad.yaml")
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}:")
    assert 'did you mean "steps"' in lines[0]
    assert "Traceback" not in result.output


def test_run_writes_the_report_and_exits_0(write_plan, tmp_path):
    plan = write_plan(plan_text("  - integrated-gradients: {steps: 4}\n", "  - grayscale\n"))
    out = tmp_path / "report"
    result = runner.invoke(app, ["run", str(plan), "--out", str(out), "--no-cache", "--quiet"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"report.html", "report.pdf", "results.json"}
    results = json.loads((out / "results.json").read_text())
    assert results["schema_version"] == "2.2"
    assert str(out / "report.html") in result.output


def test_bad_model_file_is_one_line_exit_2(write_plan, tmp_path):
    plan = write_plan(plan_text().replace("weights: weights.pt", "weights: missing.pt"))
    result = runner.invoke(app, ["run", str(plan), "--out", str(tmp_path / "r"), "--no-cache"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "missing.pt: model file not found" in result.stderr
    assert not (tmp_path / "r").exists()


def test_weights_for_another_architecture(write_plan, tmp_path):
    import torch

    torch.save({"something.weight": torch.zeros(3)}, tmp_path / "other.pt")
    plan = write_plan(plan_text().replace("weights: weights.pt", f"weights: {tmp_path / 'other.pt'}"))
    result = runner.invoke(app, ["run", str(plan), "--no-cache"])
    assert result.exit_code == 2
    assert "weights do not fit the model architecture" in result.stderr


def test_only_xai_audits_own_log_warnings_reach_stderr(capsys):
    """A library that logs through the root logger (which calls logging.basicConfig) cannot turn on every
    library's warnings: WeasyPrint's notes on the report's stylesheet stay quiet, ours print as one line."""
    import logging

    from xai_audit.cli import _WarningLines, _state, main

    main(debug=False)
    main(debug=False)  # each command's callback: still one handler
    assert sum(isinstance(h, _WarningLines) for h in logging.getLogger().handlers) == 1
    capsys.readouterr()
    logging.info("a library's note through the root logger")
    logging.getLogger("weasyprint").warning("Ignored `overflow-x: auto` at 290:17, unknown property.")
    logging.getLogger("xai_audit").warning("explainer x is stuck in native code\npast its limit")
    assert capsys.readouterr().err == "warning: explainer x is stuck in native code\\npast its limit\n"
    _state["debug"] = True
    try:
        logging.getLogger("weasyprint").warning("a note")
        assert capsys.readouterr().err == "warning: weasyprint: a note\n"
    finally:
        _state["debug"] = False


def test_the_command_ends_with_its_status_its_whole_output_and_its_exit_handlers(tmp_path):
    """``xai-audit`` (cli.run) ends the process without tearing the interpreter down: what it printed still
    arrives whole, its status is the command's, and the exit handlers (Ray's shutdown, temporary folders) run."""
    import subprocess
    import sys

    def command(*args: str) -> subprocess.CompletedProcess:
        script = ("import atexit, sys; atexit.register(lambda: print('exit handlers ran')); "
                  f"sys.argv = ['xai-audit', *{list(args)!r}]; from xai_audit.cli import run; run()")
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)

    listed = command("plugins")
    assert listed.returncode == 0, listed.stderr
    assert "synthetic-faces" in listed.stdout and listed.stdout.rstrip().endswith("exit handlers ran")
    missing = command("run", str(tmp_path / "missing.yaml"))
    assert missing.returncode == 2
    assert "plan file not found" in missing.stderr and "exit handlers ran" in missing.stdout
