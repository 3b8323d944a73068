"""Hostile strings from models, data sets, plugins and plans are shown as text, never run as markup;
nothing a plan or a data set names can write outside the output folder."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from PIL import Image
from pypdf import PdfReader

from conftest import TINY_MODEL
from xai_audit import hookimpl
from xai_audit.run.cache import Cache
from xai_audit.errors import PlanError
from xai_audit.plan import parse_plan
from xai_audit.registry import make_plugin_manager
from xai_audit.report import ReportArtifacts, write_report
from xai_audit.audit import run_audit
from xai_audit.contract.types import HypothesisPlugin, HypothesisResult

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
JINJA = "{{ 7*7 }}"
EVIL = f"{SCRIPT}{IMG}{JINJA}"


class Hostile(HypothesisPlugin):
    name = f"evil{SCRIPT}"

    def test(self, context):
        return HypothesisResult(
            claim=f"claim {IMG}", metric=f"metric {JINJA}", before=0.5, after=0.4, effect=0.1, ci=(0.0, 0.2),
            p_value=0.5, verdict="not supported", n=len(context.samples), test=SCRIPT,
            breakdown={f"../../table{SCRIPT}": [{f"col{IMG}": JINJA}]}, details={"note": EVIL},
        )


@pytest.fixture
def hostile_audit(tmp_path):
    (tmp_path / "tiny_model.py").write_text(TINY_MODEL)
    namespace: dict = {}
    exec(TINY_MODEL, namespace)
    torch.manual_seed(0)
    torch.save(namespace["make"]().state_dict(), tmp_path / "weights.pt")
    data = tmp_path / "data"
    data.mkdir()
    classes = [f"c{i}{EVIL}" for i in range(7)]
    rows = ["path,label,group"]
    for i in range(4):
        name = f"img{i}{IMG}.png".replace("/", "")
        Image.fromarray((np.random.default_rng(i).random((32, 32, 3)) * 255).astype(np.uint8)).save(data / name)
        rows.append(f'"{name}","{classes[i]}","{EVIL}{i % 2}"')
    (data / "meta.csv").write_text("\n".join(rows) + "\n")
    module = types.ModuleType("hostile")
    module.register_hypotheses = hookimpl(lambda: [Hostile])
    registry = make_plugin_manager(extra_plugins=[module])
    plan = parse_plan(
        json.dumps({
            "model": {"adapter": "torch", "module": "tiny_model.py:make", "weights": "weights.pt", "classes": classes},
            "dataset": {"loader": "image-folder", "path": "data", "metadata": "data/meta.csv", "classes": classes},
            "explainers": [{"integrated-gradients": {"steps": 2}}],
            "hypotheses": [Hostile.name, {"group-accuracy": {"min_group_size": 1}}],
            "report": {"title": f"Title {EVIL}"},
        }),
        registry, base_dir=tmp_path,
    )
    outcome = run_audit(plan, registry, cache=Cache(None))
    artifacts = ReportArtifacts(images=outcome.images, explanations=outcome.explanations, hypotheses=outcome.hypotheses,
                                predictions=outcome.predictions, labels=outcome.labels)
    out = tmp_path / "out"
    write_report(outcome.results, artifacts, out)
    return out


def test_hostile_strings_are_text_in_html(hostile_audit):
    html = (hostile_audit / "report.html").read_text()
    assert "<script" not in html.lower()
    assert "<img src=x" not in html and "onerror=alert(2)>" not in html.replace("&gt;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert JINJA in html and ">49<" not in html  # template syntax in data is never rendered


def test_hostile_strings_are_text_in_pdf(hostile_audit):
    text = " ".join(page.extract_text() for page in PdfReader(hostile_audit / "report.pdf").pages)
    assert "<script>alert(1)</script>" in text.replace("\n", "")


def test_nothing_is_written_outside_the_output_folder(hostile_audit):
    outside = [p for p in hostile_audit.parent.rglob("*") if "table" in p.name and hostile_audit not in p.parents]
    assert outside == []
    tables = list((hostile_audit / "tables").iterdir())
    assert all(t.parent == hostile_audit / "tables" and "/" not in t.name for t in tables)


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "x" * 80, ""])
def test_model_names_cannot_escape_the_output_folder(registry, name):
    text = json.dumps({
        "models": [{"name": name, "adapter": "torch", "module": "m.py:f", "classes": ["a"]},
                   {"name": "ok", "adapter": "torch", "module": "m.py:f", "classes": ["a"]}],
        "dataset": {"loader": "synthetic-faces"},
    })
    with pytest.raises(PlanError, match="needs a 'name' of letters"):
        parse_plan(text, registry)
