"""A non-editable install renders the report: templates ship inside the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import plan_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    wheels = tmp_path_factory.mktemp("wheels")
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True,
    )
    (wheel,) = wheels.glob("xai_audit-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True)
    return site


def test_wheel_contains_templates_and_plugins(wheel_site):
    assert (wheel_site / "xai_audit_templates" / "report.html").is_file()
    assert (wheel_site / "xai_audit_templates" / "report.css").is_file()
    for plugin in ("xai_audit_torch", "xai_audit_datasets", "xai_audit_captum", "xai_audit_hypotheses"):
        assert (wheel_site / plugin / "__init__.py").is_file()


def test_non_editable_install_renders_the_report(wheel_site, write_plan, tmp_path):
    plan = write_plan(plan_text("  - integrated-gradients: {steps: 3}\n", "  - grayscale\n", n=14))
    out = tmp_path / "out"
    workdir = tmp_path / "elsewhere"  # not the repo, so nothing resolves from the source tree
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(wheel_site)}
    code = (
        "import sys, xai_audit, xai_audit_templates;"
        f"assert xai_audit.__file__.startswith({str(wheel_site)!r}), xai_audit.__file__;"
        f"assert xai_audit_templates.__file__.startswith({str(wheel_site)!r});"
        "from xai_audit.cli import app; sys.argv=['xai-audit'] + sys.argv[1:]; app()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "run", str(plan), "--out", str(out), "--no-cache", "--quiet"],
        cwd=workdir, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    html = (out / "report.html").read_text()
    assert "Summary of findings" in html and "Integrated" in html.replace("integrated", "Integrated")
    assert (out / "report.pdf").stat().st_size > 1000
