"""The xai-audit command's PDF worker (report/pdfworker.py): the PDF it makes is the one made in-process, byte
for byte; a worker that died or failed leaves the job to the command, which makes the PDF or raises what
WeasyPrint raises; the command writes its report through it. Each case runs in a fresh interpreter, as the
command does: the worker is forked, and the test process has torch's threads running."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import plan_text

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the worker is forked on Linux only")

PRELUDE = """
import datetime, os, sys
from xai_audit.report.pdfworker import PdfWorker
worker = PdfWorker.start()
from xai_audit.report.render import _pdf_bytes
when = datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc)
page = "<html><head><title>t</title></head><body><h1>Hello</h1><p>A page <img src='xai-audit-figure:x'></p></body></html>"
png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db00000000049454e44ae426082")
job = (page, {"results.json": b"{}"}, when, {"Hello": "1 Hello"}, {"xai-audit-figure:x": (png, "image/png")})
"""


def _run(body: str, **env: str) -> subprocess.CompletedProcess:
    import os

    script = PRELUDE + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_the_workers_pdf_is_the_in_process_pdf_byte_for_byte():
    done = _run("""
        assert worker is not None
        worker.submit(*job)
        made = worker.result()
        assert made.startswith(b"%PDF") and made == _pdf_bytes(*job)
        assert not worker._process.is_alive()
        print("same")
    """)
    assert done.returncode == 0 and "same" in done.stdout, done.stderr


def test_a_worker_that_died_leaves_the_pdf_to_the_command():
    done = _run("""
        worker._process.kill()
        worker._process.join()
        worker.submit(*job)
        assert worker.result() == _pdf_bytes(*job)
        print("made here")
    """)
    assert done.returncode == 0 and "made here" in done.stdout, done.stderr


def test_a_job_that_fails_in_the_worker_raises_in_the_command_what_weasyprint_raises():
    done = _run("""
        bad = (page, {}, "not a date", {}, {})
        try:
            _pdf_bytes(*bad)
        except Exception as exc:  # what the PDF raises in-process for this date
            expected = type(exc)
        worker.submit(*bad)
        try:
            worker.result()
        except expected:
            print("raised", expected.__name__)
    """)
    assert done.returncode == 0 and "raised TypeError" in done.stdout, done.stderr


def test_no_worker_where_it_is_switched_off():
    done = _run("print('none' if worker is None else 'started')", XAI_AUDIT_PDF_WORKER="0")
    assert done.returncode == 0 and done.stdout.strip() == "none", done.stderr


def test_the_command_writes_its_pdf_through_the_worker(write_plan, tmp_path):
    """``xai-audit run`` (cli.run, which starts the worker) writes a PDF/A-3 with its attachments."""
    from pypdf import PdfReader

    plan = write_plan(plan_text("", "  - grayscale\n"))
    out = tmp_path / "report"
    script = (f"import sys; sys.argv = ['xai-audit', 'run', {str(plan)!r}, '--out', {str(out)!r}, '--no-cache', "
              "'--quiet']; from xai_audit.cli import run; run()")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    reader = PdfReader(out / "report.pdf")
    assert set(reader.attachments) >= {"results.json"}
    assert reader.attachments["results.json"][0] == (out / "results.json").read_bytes()
