"""Issue 17, items 7 and 8: what `run` would refuse for the plan's own reasons, `validate` refuses first
(one line naming the field, exit 2); the plan's own code is imported from the plan's folder, both spellings."""

from __future__ import annotations

import json
import re
import textwrap
import uuid
from pathlib import Path

import pytest
from conftest import TINY_MODEL, plan_text
from typer.testing import CliRunner

from xai_audit.cli import app

runner = CliRunner()

FX = textwrap.dedent(
    """
    import numpy as np

    def fog(images, density=0.3):
        return images * (1 - density) + density

    def flip(images):
        return images[..., ::-1].copy()

    NOT_A_FUNCTION = 3
    """
)


def _package(folder: Path) -> str:
    """A package beside the plan (a fresh name each time: Python keeps imported modules) with the model and
    two transforms."""
    name = "plan_pkg_" + uuid.uuid4().hex[:8]
    (folder / name).mkdir()
    (folder / name / "__init__.py").write_text("")
    (folder / name / "models.py").write_text(TINY_MODEL)
    (folder / name / "fx.py").write_text(FX)
    return name


def _validate(plan: Path):
    return runner.invoke(app, ["validate", str(plan)])


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_a_package_beside_the_plan_imports_for_the_model_and_the_transform(write_plan, model_dir):
    pkg = _package(model_dir)
    text = plan_text(hypotheses=f"  - transform: {{callable: '{pkg}.fx:fog'}}\n").replace(
        "module: tiny_model.py:make\n  weights: weights.pt", f"module: {pkg}.models:make")
    result = _validate(write_plan(text))  # the test's cwd is not the plan's folder
    assert result.exit_code == 0, result.output


def test_a_transform_file_beside_the_plan_imports_too(write_plan, model_dir):
    (model_dir / "effects.py").write_text(FX)
    result = _validate(write_plan(plan_text(hypotheses="  - transform: {callable: 'effects.py:fog'}\n")))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("callable_, says", [
    ("{pkg}.fx:nope", "has no 'nope'"),
    ("{pkg}.missing:fog", "cannot import"),
    ("nowhere.py:fog", "not found"),
    ("{pkg}.fx:NOT_A_FUNCTION", "not a function"),
])
def test_a_transform_that_cannot_be_imported_is_refused_by_validate(write_plan, model_dir, callable_, says):
    pkg = _package(model_dir)
    plan = write_plan(plan_text(hypotheses=f"  - luminance\n  - transform: {{callable: '{callable_.format(pkg=pkg)}'}}\n"))
    result = _validate(plan)
    assert result.exit_code == 2
    lines = _error_lines(result.output)
    assert len(lines) == 1 and "hypotheses[1].transform.callable" in lines[0] and says in lines[0], result.output


def test_a_model_factory_module_that_cannot_be_imported_names_the_field(write_plan):
    text = plan_text().replace("module: tiny_model.py:make", "module: no_such_pkg.models:make")
    result = _validate(write_plan(text))
    assert result.exit_code == 2
    assert "model.module" in result.output and "no_such_pkg" in result.output, result.output


def test_two_transforms_each_under_its_own_name_both_run(write_plan, model_dir, tmp_path):
    pkg = _package(model_dir)
    plan = write_plan(plan_text(
        hypotheses=f"  - transform: {{as: fog, callable: '{pkg}.fx:fog', description: fog covers the image}}\n"
                   f"  - transform: {{as: mirror, callable: '{pkg}/fx.py:flip', description: the image is mirrored}}\n",
        n=12))
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(plan), "--out", str(out), "--no-cache", "--quiet"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    steps = results["hypotheses"]
    assert {"fog", "mirror"} <= set(steps), sorted(steps)
    assert steps["fog"]["details"]["callable"].endswith(":fog")
    assert steps["mirror"]["details"]["callable"].endswith(":flip")


def test_validate_refuses_a_hub_id_that_is_a_missing_folder(write_plan):
    text = re.sub(r"model:\n(  .*\n)+", "model: {adapter: transformers, id: ./models/nowhere}\n", plan_text())
    result = _validate(write_plan(text))
    assert result.exit_code == 2 and "is a path, not a hub id" in result.output, result.output
    assert len(_error_lines(result.output)) == 1


def test_validate_loads_the_region_source_as_run_does(write_plan):
    plan = write_plan(plan_text(hypotheses="  - occlude-regions\n")
                      + "regions: {source: segmentation, id: ./models/no-face-parser}\n")
    result = _validate(plan)
    assert result.exit_code == 2 and "no-face-parser" in result.output, result.output
    assert len(_error_lines(result.output)) == 1


def test_validate_still_refuses_layer_hooks_by_name(write_plan, model_dir):
    (model_dir / "model.ts").write_bytes(b"")  # the plan is refused before the file is read
    text = plan_text(explainers="  - gradcam\n  - occlusion: {window: 8, stride: 8}\n").replace(
        "module: tiny_model.py:make\n  weights: weights.pt", "torchscript: model.ts")
    result = _validate(write_plan(text))
    assert result.exit_code == 2 and '"gradcam" reads a layer' in result.output, result.output
