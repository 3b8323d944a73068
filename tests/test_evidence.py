"""Every data set an audit reads is evidence (issue 19, item 7): a dataset-shift's data is hashed in the
provenance, checked by `xai-audit verify`, and part of the step cache's key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, plan_text
from PIL import Image
from typer.testing import CliRunner

from xai_audit.cli import app

runner = CliRunner()


def _image(path: Path, value: int) -> None:
    Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(path)


@pytest.fixture
def audit(tmp_path) -> Path:
    """A tiny model, synthetic faces to audit and a folder of other images for dataset-shift."""
    (tmp_path / "tiny_model.py").write_text(TINY_MODEL)
    namespace: dict = {}
    exec(TINY_MODEL, namespace)
    torch.manual_seed(0)
    torch.save(namespace["make"]().state_dict(), tmp_path / "weights.pt")
    for k, cls in enumerate(("happy", "sad")):
        (tmp_path / "shift" / cls).mkdir(parents=True)
        for i in range(2):
            _image(tmp_path / "shift" / cls / f"{i}.png", 60 * k + 30 * i + 20)
    hypotheses = "  - dataset-shift: {dataset: {loader: image-folder, path: shift}, name: masked}\n"
    (tmp_path / "plan.yaml").write_text(plan_text(hypotheses=hypotheses, n=12).replace(
        "report: {title: Test audit}", "report: {title: Test audit, formats: [json]}"))
    return tmp_path


def _run(audit: Path, out: str = "out") -> dict:
    result = runner.invoke(app, ["run", str(audit / "plan.yaml"), "--out", str(audit / out), "-q",
                                 "--cache-dir", str(audit / "cache")])
    assert result.exit_code == 0, result.output
    return json.loads((audit / out / "results.json").read_text())


def test_the_shift_data_is_hashed_and_verify_names_a_changed_byte(audit):
    results = _run(audit)
    [other] = results["provenance"]["other_datasets"]
    assert (other["step"], other["option"], other["loader"]) == ("dataset-shift", "dataset", "image-folder")
    assert other["n_files"] == 4 and len(other["fingerprint"]) == 64 and len(other["files_manifest_sha256"]) == 64
    assert {Path(p).name for p, _ in other["files"]} == {"0.png", "1.png"}
    assert {"kind": "dataset", "name": "image-folder"}.items() <= next(
        p for p in results["provenance"]["plugins"] if p["name"] == "image-folder").items()
    jsonschema = pytest.importorskip("jsonschema")
    from xai_audit.report.render import SCHEMA_PATH

    jsonschema.validate(results, json.loads(SCHEMA_PATH.read_text()))  # the published schema names the key
    result = runner.invoke(app, ["verify", str(audit / "out")])
    assert result.exit_code == 0, result.output
    assert "match  dataset-shift data file" in result.output
    assert "match  dataset-shift data fingerprint (dataset)" in result.output

    target = audit / "shift" / "sad" / "1.png"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    result = runner.invoke(app, ["verify", str(audit / "out"), "--no-load"])
    assert result.exit_code == 1
    changed = [line for line in result.output.splitlines() if line.lstrip().startswith("changed")]
    assert changed == [f"  changed  dataset-shift data file {target}"]


def test_changed_shift_data_is_never_answered_from_the_cache(audit):
    first = _run(audit)
    assert _run(audit, "again")["run"]["cache"]["misses"] == 0  # unchanged: every step from the cache
    _image(audit / "shift" / "happy" / "0.png", 250)  # other pixels, still a good image
    after = _run(audit, "after")
    assert after["run"]["cache"]["misses"] > 0
    before_files = dict(map(tuple, first["provenance"]["other_datasets"][0]["files"]))
    after_files = dict(map(tuple, after["provenance"]["other_datasets"][0]["files"]))
    changed = [p for p in before_files if before_files[p] != after_files[p]]
    assert [Path(p).relative_to(audit).as_posix() for p in changed] == ["shift/happy/0.png"]
    result = runner.invoke(app, ["verify", str(audit / "out")])
    assert result.exit_code == 1 and "changed  dataset-shift data fingerprint (dataset)" in result.output
    assert runner.invoke(app, ["verify", str(audit / "after")]).exit_code == 0


def test_a_plan_without_other_data_keeps_its_provenance(write_plan, tmp_path):
    plan = write_plan(plan_text(n=8))
    result = runner.invoke(app, ["run", str(plan), "--out", str(tmp_path / "out"), "--no-cache", "-q"])
    assert result.exit_code == 0, result.output
    assert "other_datasets" not in json.loads((tmp_path / "out" / "results.json").read_text())["provenance"]
