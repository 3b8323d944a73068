"""Provenance and `xai-audit verify`: a changed weight file is caught."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from conftest import plan_text
from xai_audit.cli import app

runner = CliRunner()


def test_provenance_records_hashes_versions_and_plan(write_plan, tmp_path):
    plan = write_plan(plan_text())
    out = tmp_path / "out"
    assert runner.invoke(app, ["run", str(plan), "--out", str(out), "--no-cache", "-q"]).exit_code == 0
    p = json.loads((out / "results.json").read_text())["provenance"]
    assert p["model"]["files"][0]["path"].endswith("weights.pt") and len(p["model"]["files"][0]["sha256"]) == 64
    assert p["plan_file"]["path"].endswith("plan.yaml")
    env = p["environment"]
    assert env["libraries"]["torch"] and env["libraries"]["captum"] and env["python"]
    assert env["xai_audit"]
    assert {"kind": "model-adapter", "name": "torch"}.items() <= p["plugins"][0].items()


def test_verify_catches_a_changed_weight_file(write_plan, model_dir, tmp_path):
    plan = write_plan(plan_text())
    out = tmp_path / "out"
    assert runner.invoke(app, ["run", str(plan), "--out", str(out), "--no-cache", "-q"]).exit_code == 0
    result = runner.invoke(app, ["verify", str(out)])
    assert result.exit_code == 0, result.output
    assert "all 4 match the report" in result.output  # weights, plan file, two fingerprints

    state = torch.load(model_dir / "weights.pt", weights_only=True)
    state["head.bias"] = state["head.bias"] + 0.01
    torch.save(state, model_dir / "weights.pt")
    result = runner.invoke(app, ["verify", str(out)])
    assert result.exit_code == 1
    assert "changed  model file" in result.output and "changed  model weights fingerprint" in result.output

    (model_dir / "weights.pt").unlink()
    result = runner.invoke(app, ["verify", str(out), "--no-load"])
    assert result.exit_code == 1 and "missing  model file" in result.output


def test_verify_catches_changed_data_files(tmp_path, registry):
    import numpy as np
    from PIL import Image

    from conftest import TINY_MODEL

    (tmp_path / "tiny_model.py").write_text(TINY_MODEL)
    data = tmp_path / "data" / "happy"
    data.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(data / f"{i}.png")
    (tmp_path / "plan.yaml").write_text(
        "model: {adapter: torch, module: tiny_model.py:make, classes: [happy, sad, neutral, angry, disgust, fear, surprise]}\n"
        "dataset: {loader: image-folder, path: data}\n"
    )
    out = tmp_path / "out"
    assert runner.invoke(app, ["run", str(tmp_path / "plan.yaml"), "--out", str(out), "--no-cache", "-q"]).exit_code == 0
    assert runner.invoke(app, ["verify", str(out)]).exit_code == 0
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(data / "1.png")
    result = runner.invoke(app, ["verify", str(out)])
    assert result.exit_code == 1 and "changed  data file" in result.output and "changed  data fingerprint" in result.output


def test_verify_bad_folder_is_exit_2(tmp_path):
    result = runner.invoke(app, ["verify", str(tmp_path)])
    assert result.exit_code == 2 and "no results.json here" in result.stderr
