"""results.json follows its published JSON Schema; the tables come as CSV beside it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from conftest import plan_text
from xai_audit.cli import app

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "xai_audit" / "schema" / "results.schema.json").read_text())


def validate(results: dict) -> None:
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(results)


def test_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_a_run_writes_results_that_validate_with_schema_and_csv_beside(write_plan, tmp_path):
    plan = write_plan(plan_text("  - integrated-gradients: {steps: 3}\n", "  - grayscale\n  - group-accuracy: {min_group_size: 2}\n",
                                extra="checks:\n  - accuracy >= 0\n"))
    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["run", str(plan), "--out", str(out), "--no-cache", "-q"]).exit_code == 0
    results = json.loads((out / "results.json").read_text())
    validate(results)
    assert json.loads((out / "results.schema.json").read_text()) == SCHEMA
    with open(out / "tables" / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == results["classes"]
    with open(out / "tables" / "hypotheses.csv") as f:
        assert {r["step"] for r in csv.DictReader(f)} == {"grayscale", "group-accuracy"}
    assert (out / "tables" / "confusion_matrix.csv").is_file()


def test_schema_rejects_what_a_reader_would_misread(write_plan, tmp_path):
    plan = write_plan(plan_text())
    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["run", str(plan), "--out", str(out), "--no-cache", "-q"]).exit_code == 0
    results = json.loads((out / "results.json").read_text())
    broken = dict(results, schema_version="3.0")
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)
    broken = dict(results, accuracy={**results["accuracy"], "value": 1.5})
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)
