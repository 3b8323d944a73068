"""Long class names as table headers (issue 21): a name of 200 characters without a space, a column header
of a table, does not widen the table past the page in the HTML or the PDF. The header comes cut short
(start … end), the whole name in its title and in a legend under the table; results.json keeps it whole."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_MODEL
from xai_audit.audit import run_audit
from xai_audit.plan import parse_plan
from xai_audit.registry import make_plugin_manager
from xai_audit.report import ReportArtifacts, write_report
from xai_audit.report.display import HEADER_RUN_LIMIT, column_header
from xai_audit.run.cache import Cache

#: seven class names of 200 characters, no space in any; they differ only in their start
CLASSES = [(f"class{i}_" + "abcdefghij" * 20)[:200] for i in range(7)]
#: A4 in points, as the stylesheet's @page sets it
A4_WIDTH = 595.28


def test_a_header_is_cut_short_only_where_one_unbroken_run_is_too_long():
    assert column_header("accuracy") is None and column_header("group: recall per class") is None
    assert column_header("equalized odds difference to the best group") is None  # long, but wraps between words
    short = column_header(CLASSES[3])
    assert short is not None and len(short) == HEADER_RUN_LIMIT and "…" in short
    assert short.startswith("class3_") and short.endswith(CLASSES[3][-4:])  # start and end kept
    assert column_header("recall " + "y" * 300) == "recall " + column_header("y" * 300)


@pytest.fixture(scope="module")
def long_names_report(tmp_path_factory) -> Path:
    """A report whose group test has a table with one column per class: seven headers of 200 characters."""
    tmp = tmp_path_factory.mktemp("long-headers")
    (tmp / "tiny_model.py").write_text(TINY_MODEL)
    namespace: dict = {}
    exec(TINY_MODEL, namespace)
    torch.manual_seed(0)
    torch.save(namespace["make"]().state_dict(), tmp / "weights.pt")
    data = tmp / "data"
    data.mkdir()
    rows = ["path,label,group"]
    for i in range(14):
        pixels = (np.random.default_rng(i).random((32, 32, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(data / f"i{i}.png")
        rows.append(f"i{i}.png,{CLASSES[i % 7]},g{i % 2}")
    (data / "meta.csv").write_text("\n".join(rows) + "\n")
    registry = make_plugin_manager()
    plan = parse_plan(json.dumps({
        "model": {"adapter": "torch", "module": "tiny_model.py:make", "weights": "weights.pt", "classes": CLASSES},
        "dataset": {"loader": "image-folder", "path": "data", "metadata": "data/meta.csv", "classes": CLASSES},
        "hypotheses": [{"group-accuracy": {"min_group_size": 1}}],
        "report": {"title": "Long class names"},
        # long unbroken runs in running text too: the system's facts are a grid whose text wraps in place
        "system": {"provider": "provider_" + "klmnopqrst" * 20, "intended_purpose": "purpose " + "uvwxyz" * 40},
    }), registry, base_dir=tmp)
    outcome = run_audit(plan, registry, cache=Cache(None))
    artifacts = ReportArtifacts(images=outcome.images, explanations=outcome.explanations,
                                hypotheses=outcome.hypotheses, predictions=outcome.predictions, labels=outcome.labels)
    write_report(outcome.results, artifacts, tmp / "out", formats=["html", "pdf", "json"])
    return tmp / "out"


def test_long_class_names_as_headers_keep_the_table_within_the_page(long_names_report):
    from pypdf import PdfReader

    out = long_names_report
    assert json.loads((out / "results.json").read_text())["classes"] == CLASSES  # whole where the numbers are

    html = (out / "report.html").read_text()
    headers = re.findall(r"<th scope=\"col\"([^>]*)>([^<]*)</th>", html)
    assert not any(name in text for _, text in headers for name in CLASSES)  # no header shows a whole name
    cut = [(re.search(r'title="([^"]*)"', attributes).group(1), text) for attributes, text in headers
           if "cut" in attributes]
    assert {name for name, _ in cut} == set(CLASSES), "the group test's table has a column per class"
    for name, text in cut:
        assert text == column_header(name) and len(text) <= HEADER_RUN_LIMIT
        assert f'<span class="cut-name">{text}</span> is {name}' in html  # the whole name in the legend

    pages = PdfReader(out / "report.pdf").pages
    assert {round(float(page.mediabox.width), 2) for page in pages} == {A4_WIDTH}
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler) is not installed: the PDF's text is not measured")
    # every word on every page ends within the page (a header that widened its table ran off its right edge)
    boxes = subprocess.run(["pdftotext", "-bbox", str(out / "report.pdf"), "-"], capture_output=True, text=True,
                           check=True).stdout
    for width, body in re.findall(r'<page width="([\d.]+)" height="[\d.]+">(.*?)</page>', boxes, re.S):
        ends = [(float(x), word) for x, word in re.findall(r'xMax="([\d.]+)"[^>]*>([^<]*)<', body)]
        assert ends and max(ends)[0] <= float(width), f"text runs off the page: {max(ends)[1][:40]}"
    # and each whole name is there, wrapped: no line holds all of one
    text = subprocess.run(["pdftotext", "-layout", str(out / "report.pdf"), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert max(len(line) for line in text.splitlines()) < len(CLASSES[0])
    flat = re.sub(r"\s+", "", text)
    assert all(name in flat for name in CLASSES)
    assert "provider_" + "klmnopqrst" * 14 in flat  # shown (cut at 200 characters), wrapped within the page


def test_the_print_page_marks_only_long_unbroken_runs_of_text():
    """display.breakable_runs: a run of text over BREAKABLE_RUN characters (a class name, a hash) is put in a
    span the print stylesheet lets break anywhere; words, attributes, the stylesheet and the title are left
    as they are, and an entity inside a run stays whole."""
    from xai_audit.report.display import BREAKABLE_RUN, breakable_runs

    name = "n" * (BREAKABLE_RUN + 1)
    word = "w" * BREAKABLE_RUN
    page = (f"<style>p::after {{ content: '{name}' }}</style><title>{name}</title>"
            f'<td title="{name}">{word} {name}&amp;{name}</td>')
    assert breakable_runs(page) == (
        f"<style>p::after {{ content: '{name}' }}</style><title>{name}</title>"
        f'<td title="{name}">{word} <span class="run">{name}&amp;{name}</span></td>')
