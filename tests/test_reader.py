"""Read the report as a person would: HTML in headless Chromium, the PDF through pdftoppm.

Nothing may overflow the page, and every figure must load. Skipped (with the
reason) where Chromium or poppler is not installed; `make test` installs them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import plan_text
from xai_audit.cli import app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
PDFTOPPM = shutil.which("pdftoppm")

PROBE = """
<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  const doc = document.documentElement;
  const wide = [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > doc.clientWidth + 1).length;
  document.body.setAttribute('data-probe', `images=${imgs.length} broken=${broken} overflow=${doc.scrollWidth > doc.clientWidth} wide=${wide}`);
});
</script>
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from conftest import TINY_MODEL

    import torch

    folder = tmp_path_factory.mktemp("reader")
    (folder / "tiny_model.py").write_text(TINY_MODEL)
    namespace: dict = {}
    exec(TINY_MODEL, namespace)
    torch.manual_seed(0)
    torch.save(namespace["make"]().state_dict(), folder / "weights.pt")
    # long, hostile and unbreakable strings are the usual cause of overflow
    text = plan_text("  - integrated-gradients: {steps: 3}\n", "  - grayscale\n  - group-accuracy: {min_group_size: 2}\n",
                     extra="checks:\n  - accuracy > 0.99\n").replace(
        "title: Test audit", "title: 'A_very_long_title_without_any_space_" + "x" * 80 + " <script>alert(1)</script>'")
    (folder / "plan.yaml").write_text(text)
    out = folder / "out"
    result = CliRunner().invoke(app, ["run", str(folder / "plan.yaml"), "--out", str(out), "--no-cache", "-q"])
    assert result.exit_code == 1, result.output  # the check fails, the report is still written
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs it)")
@pytest.mark.parametrize("width", [1200, 800])
def test_html_in_chromium_loads_every_figure_and_nothing_overflows(report, tmp_path, width):
    html = (report / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"))
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},2000", "--virtual-time-budget=5000",
         "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout
    match = re.search(r'data-probe="images=(\d+) broken=(\d+) overflow=(\w+) wide=(\d+)"', dom)
    assert match, dom[-2000:]
    images, broken, overflow, wide = int(match[1]), int(match[2]), match[3], int(match[4])
    assert images >= 4 and broken == 0
    assert overflow == "false" and wide == 0, f"{wide} elements stick out of a {width}px window"


@pytest.mark.skipif(PDFTOPPM is None, reason="poppler-utils is not installed (make test installs it)")
def test_pdf_pages_keep_their_margins(report, tmp_path):
    subprocess.run([PDFTOPPM, "-r", "40", "-png", str(report / "report.pdf"), str(tmp_path / "page")], check=True, timeout=120)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) >= 3
    for page in pages:
        pixels = np.asarray(Image.open(page).convert("L"), dtype=np.float32)
        h, w = pixels.shape
        margin = int(w * 0.045)  # A4's 15 mm side margins are 7 % of the width: the outer 4.5 % must stay blank
        assert pixels[:, :margin].min() > 200 and pixels[:, w - margin :].min() > 200, f"{page.name}: ink in the side margin"


def test_every_figure_has_alt_text_and_the_first_page_has_the_verdict(report):
    html = (report / "report.html").read_text()
    images = re.findall(r"<img\b[^>]*>", html)
    assert images and all(re.search(r'alt="[^"]{8,}"', tag) for tag in images)
    assert '<p class="verdict verdict-box-fail"><strong>Does not pass.</strong>' in html
    summary = html.split('id="provenance"')[0]  # the first section holds the verdict, checks and findings
    assert "accuracy &gt; 0.99" in summary and "Findings" in summary


def test_letter_paper(report, tmp_path):
    import json

    from pypdf import PdfReader

    from xai_audit.report import ReportArtifacts, write_report

    results = json.loads((report / "results.json").read_text())
    results["plan"]["report"]["paper"] = "letter"
    write_report(results, ReportArtifacts(), tmp_path, formats=["pdf"])
    box = PdfReader(tmp_path / "report.pdf").pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (612, 792)
    a4 = PdfReader(report / "report.pdf").pages[0].mediabox
    assert (round(float(a4.width)), round(float(a4.height))) == (595, 842)
