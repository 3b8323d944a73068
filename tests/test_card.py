"""The model card (issue 19, item 5): results.json -> a Hugging Face README.md whose metadata round-trips."""

from __future__ import annotations

import copy
import json
import socket
from pathlib import Path

import pytest
import yaml
from conftest import TINY_MODEL, plan_text
from typer.testing import CliRunner

from xai_audit.cli import app
from xai_audit.report.card import NOT_STATED, model_card

runner = CliRunner()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A tiny audit with per-group accuracy and a second data set, written as json and card only."""
    import torch

    root = tmp_path_factory.mktemp("card")
    (root / "tiny_model.py").write_text(TINY_MODEL)
    namespace: dict = {}
    exec(TINY_MODEL, namespace)
    torch.manual_seed(0)
    torch.save(namespace["make"]().state_dict(), root / "weights.pt")
    hypotheses = ("  - group-accuracy: {by: [skin_tone]}\n"
                  "  - dataset-shift: {dataset: {loader: synthetic-faces, split: test, n: 16, size: 32, seed: 5}}\n")
    (root / "plan.yaml").write_text(plan_text(hypotheses=hypotheses, n=36))
    out = root / "out"
    result = runner.invoke(app, ["run", str(root / "plan.yaml"), "--out", str(out), "--no-cache", "-q",
                                 "--formats", "json,card"])
    assert result.exit_code == 0, result.output
    return out


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def _metrics(meta: dict) -> list[tuple[dict, dict]]:
    [model] = meta["model-index"]
    return [(entry["dataset"], m) for entry in model["results"] for m in entry["metrics"]]


def test_card_is_written_beside_the_report_and_only_when_asked(report):
    assert (report / "README.md").is_file() and (report / "results.json").is_file()
    assert not (report / "report.html").exists()  # --formats replaced the plan's formats


def test_every_metric_round_trips_from_results_json(report):
    results = json.loads((report / "results.json").read_text())
    text = (report / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["pipeline_tag"] == "image-classification" and meta["library_name"] == "pytorch"
    metrics = _metrics(meta)
    here = [(d, m) for d, m in metrics if d.get("revision") == results["provenance"]["dataset"]["fingerprint"]]

    acc = results["accuracy"]
    [(_, overall)] = [(d, m) for d, m in here if m["type"] == "accuracy" and "config" not in m]
    assert overall["value"] == acc["value"] and overall["args"]["n"] == acc["n"]
    assert [overall["args"]["ci_low"], overall["args"]["ci_high"]] == acc["ci"]

    rows = results["hypotheses"]["group-accuracy"]["breakdown"]["skin_tone"]
    assert len(rows) == 6
    by_config = {m["config"]: m for _, m in here if "config" in m}
    for row in rows:
        m = by_config[f"skin_tone={row['group']}"]
        assert m["value"] == row["accuracy"] and m["args"]["n"] == row["n"]
        assert [m["args"]["ci_low"], m["args"]["ci_high"]] == row["ci"]
    for row in results["per_class"]:
        if row["recall"] is not None:
            assert by_config[f"class={row['class']}"]["value"] == row["recall"]

    shift = results["hypotheses"]["dataset-shift"]
    [(dataset, other)] = [(d, m) for d, m in metrics if d not in [h for h, _ in here]]
    assert other["value"] == shift["after"] and other["args"]["n"] == shift["n"]
    assert [other["args"]["ci_low"], other["args"]["ci_high"]] == shift["details"]["accuracy_other_ci"]
    assert dataset["revision"] == results["provenance"]["other_datasets"][0]["fingerprint"]

    # huggingface_hub reads the card back to the same numbers
    from huggingface_hub import ModelCard

    card = ModelCard(text)
    values = sorted(e.metric_value for e in card.data.eval_results)
    assert values == sorted(m["value"] for _, m in metrics)
    # the body shows them too
    assert f"{100 * acc['value']:.1f} % (95 % CI {100 * acc['ci'][0]:.1f}–{100 * acc['ci'][1]:.1f} %" in text


def test_absent_fields_are_absent_never_invented(report):
    results = json.loads((report / "results.json").read_text())
    results.pop("system", None)
    results.pop("limitations", None)
    text = model_card(results)
    meta = _front_matter(text)
    assert not {"license", "datasets", "base_model", "language"} & set(meta)
    for label in ("Intended purpose", "Intended users", "Provider", "Model version", "Responsible persons"):
        assert f"- **{label}:** {NOT_STATED}" in text
    assert "not recorded (this results.json has no `limitations`)" in text
    assert "Declared by the provider: Not stated." in text

    stated = copy.deepcopy(results)
    stated["system"] = {"intended_purpose": "Sort | <b>photos</b> by mood", "provider": "Acme",
                        "responsible_persons": [{"name": "Ada Lovelace", "role": "owner"}],
                        "known_limitations": ["Adults only"]}
    stated["limitations"] = [{"kind": "too small", "text": "Group VI is too small to judge."}]
    text = model_card(stated)
    assert r"- **Intended purpose:** Sort \| &lt;b&gt;photos&lt;/b&gt; by mood" in text  # one line, no HTML
    assert "- **Provider:** Acme" in text and "  - Ada Lovelace (owner)" in text
    assert f"- **Intended users:** {NOT_STATED}" in text and "- Adults only" in text
    assert "- Group VI is too small to judge." in text
    assert _front_matter(text)["model-index"][0]["name"] != "Acme"  # no model version stated: not the provider's

    stated["system"]["model_version"] = "mood-cnn 2.1"
    assert _front_matter(model_card(stated))["model-index"][0]["name"] == "mood-cnn 2.1"

    unlabelled = copy.deepcopy(results)
    unlabelled["accuracy"] = None
    unlabelled["hypotheses"] = {}
    text = model_card(unlabelled)
    assert "Accuracy: not measured" in text and "model-index" not in _front_matter(text)


def test_the_card_needs_no_network(report, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    results = json.loads((report / "results.json").read_text())
    assert model_card(results).startswith("---\n")


def test_unknown_format_is_exit_2(report):
    plan = report.parent / "plan.yaml"
    result = runner.invoke(app, ["run", str(plan), "--out", str(report.parent / "x"), "--formats", "json,cards"])
    assert result.exit_code == 2 and "--formats: unknown format 'cards'" in result.stderr
    assert not (report.parent / "x").exists()


def test_findings_are_listed_as_the_report_ranks_them(report):
    results = json.loads((report / "results.json").read_text())
    results["findings"] = [
        {"kind": "bias", "kind_label": "Bias", "severity": "high", "title": "Accuracy differs by skin_tone",
         "metric": "accuracy gap", "effect": 0.12, "ci": [0.05, 0.2], "p_value_adjusted": 0.0012},
        {"kind": "shortcut", "kind_label": "Shortcut", "severity": "low", "title": "Looks at the corner",
         "metric": "attribution mass", "effect": 0.41, "ci": None, "p_value_adjusted": None},
    ]
    text = model_card(results)
    rows = [line for line in text.splitlines() if line.startswith(("| high", "| low"))]
    assert rows == [r"| high | Bias | Accuracy differs by skin\_tone | +12.0 pp [+5.0, +20.0] | 0.0012 |",
                    "| low | Shortcut | Looks at the corner | +0.41 |  |"]
    results["findings"] = []
    assert "No finding: no hypothesis the audit tested was supported" in model_card(results)
