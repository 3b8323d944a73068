"""The PDF laid out in parts side by side (report/pdfparts.py) is the PDF laid out whole: the same pages pixel
for pixel, page numbers of the whole, the same outline, named destinations and links (across the cut too), the
same metadata and attachments; the cut is made only where the stylesheet starts a page; a helper that fails
leaves its part to the caller; a short page or a user's stylesheet is laid out whole."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from test_report import make_artifacts, make_results
from xai_audit.report import pdfparts, write_report
from xai_audit.report.context import build_context
from xai_audit.report.render import (
    _builtin_page,
    _figures_by_reference,
    _pdf_bytes,
    bookmark_labels,
    render_html,
)

PDFTOPPM = shutil.which("pdftoppm")
WHEN = datetime(2026, 3, 4, 5, 6, 7)
EVIDENCE = {"results.json": b'{"a": 1}\n', "plan-as-run.yaml": b"title: t\n", "finetune_manifest.csv": b"x\n"}


@pytest.fixture(scope="module")
def job() -> tuple:
    """A small report's print page and what its PDF is made with."""
    context = build_context(make_results(), make_artifacts())
    with _figures_by_reference() as figures:
        printed = render_html(context, medium="print")
    return printed, EVIDENCE, WHEN, bookmark_labels(context["toc"]), figures


@pytest.fixture()
def small_cuts(monkeypatch):
    """The small test report is cut as the demo's is (its page is far shorter than the threshold)."""
    monkeypatch.setattr(pdfparts, "MIN_CHARACTERS", 0)
    monkeypatch.setattr(pdfparts, "MIN_PART", 0)


#: where each case cuts the small report's page (places: the appendix, then its sections after the first):
#: before the appendix; before an appendix section (inside the appendix); both (a part in the middle); at every
#: place (None: :func:`pdfparts.cut`, as the demo's page is cut)
CUTS = {"appendix": [0], "section": [2], "three": [0, 2], "every": None}


def _forked(script: str, folder: Path, job: tuple) -> subprocess.CompletedProcess:
    """``script`` in a fresh interpreter (one thread, as the command's PDF worker is) that may fork helpers and
    cuts the small report's page, with ``job`` (the print page and its PDF's arguments) loaded as ``job``; its
    stdout is bytes."""
    import pickle

    (folder / "job.pickle").write_bytes(pickle.dumps((job[0], job[1], WHEN, job[3], job[4])))
    prelude = textwrap.dedent(f"""
        import os, pickle, sys
        from xai_audit.report import pdfparts
        pdfparts.MIN_CHARACTERS = pdfparts.MIN_PART = 0
        pdfparts.allow_fork()
        job = pickle.loads(open({str(folder / "job.pickle")!r}, "rb").read())
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script)], capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def made(job, tmp_path_factory) -> dict[str, bytes]:
    """The PDF laid out whole (in this process), and in parts at each of CUTS (where the command lays them out:
    in a process that forks its helpers)."""
    made = {"whole": _pdf_bytes(*job)}
    folder = tmp_path_factory.mktemp("parts")
    for name, chosen in CUTS.items():
        done = _forked(f"""
            chosen = {chosen!r}
            if chosen is not None:
                places = pdfparts._page_breaks(job[0], job[0].find('<div class="appendix" id="appendix">'))
                pdfparts.cut = lambda page: pdfparts._linked_across(pdfparts._parts(page, [places[i] for i in chosen]))
            sys.stdout.buffer.write(pdfparts.pdf_in_parts(*job))
        """, folder, job)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        made[name] = done.stdout
    return made


def _reader(data: bytes) -> PdfReader:
    return PdfReader(io.BytesIO(data))


def _outline(reader: PdfReader, entries=None, depth: int = 0) -> list[tuple]:
    found = []
    for entry in reader.outline if entries is None else entries:
        if isinstance(entry, list):
            found += _outline(reader, entry, depth + 1)
        else:
            found.append((depth, entry.title, reader.get_destination_page_number(entry), round(float(entry.left), 2),
                          round(float(entry.top), 2), entry.get("/Count", 0) >= 0))
    return found


def _links(reader: PdfReader) -> list[tuple]:
    found = []
    for number, page in enumerate(reader.pages):
        for annotation in page.get("/Annots", []) or []:
            annotation = annotation.get_object()
            action = annotation.get("/A")
            found.append((number, [round(float(v), 2) for v in annotation["/Rect"]], annotation.get("/Dest"),
                          action.get_object().get("/URI") if action is not None else None))
    return found


def _destinations(reader: PdfReader) -> dict[str, tuple]:
    return {name: (reader.get_destination_page_number(dest), round(float(dest.left), 2), round(float(dest.top), 2))
            for name, dest in reader.named_destinations.items()}


@pytest.mark.parametrize("parts", list(CUTS))
def test_parts_make_the_document_the_whole_makes(made, parts):
    whole, cut = _reader(made["whole"]), _reader(made[parts])
    assert len(cut.pages) == len(whole.pages) >= 6
    assert cut.metadata == whole.metadata
    xmp = cut.trailer["/Root"]["/Metadata"].get_object().get_data()
    assert xmp == whole.trailer["/Root"]["/Metadata"].get_object().get_data() and b"pdfaid:part" in xmp
    assert "/OutputIntents" in cut.trailer["/Root"]
    assert {name: data for name, data in cut.attachments.items()} == {n: [d] for n, d in EVIDENCE.items()}
    assert _outline(cut) == _outline(whole) and len(_outline(whole)) >= 8
    assert _destinations(cut) == _destinations(whole)
    links = _links(cut)
    assert links == _links(whole) and links
    internal = [dest for _, _, dest, _ in links if dest is not None]
    assert internal and set(internal) <= set(_destinations(cut))  # every link lands, across the cut too
    assert not any(uri and uri.startswith(pdfparts.ACROSS) for *_, uri in links)
    for number, page in enumerate(cut.pages, 1):  # the page numbers of the whole, on every page
        assert f"Page {number} of {len(cut.pages)}" in page.extract_text()


@pytest.mark.skipif(PDFTOPPM is None, reason="pdftoppm (poppler) is not installed")
@pytest.mark.parametrize("parts", list(CUTS))
def test_parts_draw_every_page_as_the_whole_does(made, parts, tmp_path):
    pages = {}
    for name in ("whole", parts):
        (tmp_path / f"{name}.pdf").write_bytes(made[name])
        subprocess.run([PDFTOPPM, "-r", "50", "-png", str(tmp_path / f"{name}.pdf"), str(tmp_path / name)], check=True)
        pages[name] = sorted(tmp_path.glob(f"{name}-*.png"))
    assert len(pages["whole"]) == len(pages[parts])
    for one, other in zip(pages["whole"], pages[parts]):
        assert np.array_equal(np.asarray(Image.open(one)), np.asarray(Image.open(other))), one.name


def test_the_cut_is_where_the_appendix_starts_a_page(job, small_cuts):
    html = job[0]
    places = pdfparts._page_breaks(html, html.find('<div class="appendix" id="appendix">'))
    parts = pdfparts.cut(html)
    assert len(parts) == len(places) + 2 >= 6  # the body, the appendix, each of its sections after its first
    for place in places:
        assert html.startswith(('<div class="appendix"', '<section class="section'), place)
    assert parts[1].count('<div class="report-body">') == 1 and '<div class="report-body">' not in parts[0]
    # a part's own metadata (the run's date among it) is the first part's alone: the others are the same on a re-run
    assert '<meta name="generator"' in parts[0] and "<title>" in parts[0]
    assert not any('<meta name="' in part or "<title>" in part for part in parts[1:])
    starts = [re.search(r'<h1 class="report-title" style="[^"]*hidden[^"]*">', part) for part in parts[1:]]
    assert all(starts)  # the running title, unseen, in every part after the first
    ids = [set(re.findall(r'\sid="([^"]+)"', part)) for part in parts]
    assert set().union(*ids) == set(re.findall(r'\sid="([^"]+)"', html))
    assert sum(len(one) for one in ids) == len(set().union(*ids))  # each anchor in one part only
    for part in parts:
        assert part.count("<style>") == html.count("<style>") + 1 and part.rstrip().endswith("</html>")


def test_short_pages_and_a_users_stylesheet_are_laid_out_whole(job, tmp_path, monkeypatch):
    assert pdfparts.pdf_in_parts(*job[:2], WHEN, job[3], job[4]) is None  # a library call: laid out whole
    monkeypatch.setattr(pdfparts, "_may_fork", True)
    assert pdfparts.cut(job[0]) == [job[0]]  # far shorter than MIN_CHARACTERS
    assert pdfparts.pdf_in_parts(*job[:2], WHEN, job[3], job[4]) is None
    monkeypatch.setattr(pdfparts, "MIN_CHARACTERS", 0)
    monkeypatch.setenv(pdfparts.ENV, "0")
    assert pdfparts.cut(job[0]) == [job[0]]
    assert _builtin_page([]) and _builtin_page([tmp_path])  # a folder that overrides neither
    (tmp_path / "report.css").write_text("@page { @bottom-right { content: counter(page); } }")
    assert not _builtin_page([tmp_path])


@pytest.mark.parametrize("failure", [
    "def cannot(self, function, arguments):\n    raise OSError('no more processes')\npdfparts._Helper._fork = cannot",
    "def dies(out, function, arguments):\n    os._exit(9)\npdfparts._answer = dies",  # killed before it said a word
])
def test_a_helper_that_fails_leaves_its_parts_here(job, made, tmp_path, failure):
    done = _forked(failure + "\nsys.stdout.buffer.write(pdfparts.pdf_in_parts(*job))", tmp_path, job)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout == made["every"]


def test_the_commands_pdf_worker_lays_out_in_parts(job, made, tmp_path):
    """The worker (forked before the audit, one thread) lays out a long page in parts; the process that
    starts it, which may run threads, does not (its PDF would be laid out whole)."""
    done = _forked("""
        pdfparts._may_fork = False  # as in the command's own process
        from xai_audit.report.pdfworker import PdfWorker
        worker = PdfWorker.start()
        worker.submit(*job, True, None)
        sys.stdout.buffer.write(worker.result())
    """, tmp_path, job)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout == made["every"] != made["whole"]


def test_an_error_here_leaves_no_helper_at_work(job, tmp_path):
    done = _forked("""
        def failing(jobs, laid_out=None):
            if os.getpid() == parent:
                raise RuntimeError("WeasyPrint failed")
            import time; time.sleep(120)  # a helper still at work
        parent = os.getpid()
        pdfparts.parts_pdf = failing
        try:
            pdfparts.pdf_in_parts(*job)
        except RuntimeError as exc:
            print("raised", exc)
        try:
            os.waitpid(-1, os.WNOHANG)
            print("a helper is left")
        except ChildProcessError:
            print("no helper left")
    """, tmp_path, job)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().split("\n")[:2] == ["raised WeasyPrint failed", "no helper left"]


def test_parts_are_kept_by_content_and_not_laid_out_again(job, made, small_cuts, tmp_path, monkeypatch):
    laid_out = []
    real = pdfparts.parts_pdf

    def counted(jobs, laid_out=None):
        laid.append(len(jobs))
        return real(jobs, laid_out=laid_out)

    def no_process(self, function, arguments):  # every part laid out here, where it is counted
        raise OSError("no more processes")

    laid = laid_out
    monkeypatch.setattr(pdfparts, "parts_pdf", counted)
    monkeypatch.setattr(pdfparts, "_may_fork", True)
    monkeypatch.setattr(pdfparts._Helper, "_fork", no_process)
    pieces = len(pdfparts.cut(job[0]))
    first = pdfparts.pdf_in_parts(*job[:2], WHEN, job[3], job[4], tmp_path)
    assert first == made["every"] and sum(laid_out) == pieces
    stored = sorted((tmp_path / "figures" / "pdf").rglob("*.part"))
    assert len(stored) == pieces  # every part after the first, and the page numbers
    laid_out.clear()
    later = WHEN.replace(year=2027)  # a re-run: only the first part (its date, its attachments) is laid out
    again = pdfparts.pdf_in_parts(*job[:2], later, job[3], job[4], tmp_path)
    assert laid_out == [1] and _reader(again).attachments["results.json"] == [EVIDENCE["results.json"]]
    stored[0].write_bytes(stored[0].read_bytes()[:-1] + b"x")  # a damaged entry is laid out again
    laid_out.clear()
    assert pdfparts.pdf_in_parts(*job[:2], WHEN, job[3], job[4], tmp_path) == made["every"]
    assert sum(laid_out) == 2


def test_a_short_part_is_joined_to_the_next(monkeypatch):
    monkeypatch.setattr(pdfparts, "MIN_PART", 10)
    # parts after the first start at the places: 20-25 is short (joined to the next: 20-40), 40-45 too (40-52);
    # the first part (0-20) is never joined
    assert pdfparts._joined([20, 25, 40, 45], 52) == [20, 40]
    assert pdfparts._joined([20, 25, 40, 45], 48) == [20]  # 40-48 is short and last: joined to the one before
    assert pdfparts._joined([5, 30], 60) == [5, 30]
    assert pdfparts._joined([5, 8], 12) == [5]


def test_the_outline_follows_weasyprints_rule_for_skipped_levels():
    marks = [([(1, "a", (0, 10), "open"), (3, "a.1", (0, 20), "closed")], 100.0),
             ([(2, "a.2", (5, 30), "open"), (1, "b", (0, 40), "open"), (4, "b.1", (0, 50), "open")], 200.0)]
    tree = pdfparts.bookmark_tree(marks, scale=1)
    assert [label for label, *_ in tree] == ["a", "b"]
    assert [label for label, *_ in tree[0][2]] == ["a.1", "a.2"]  # level 3 then level 2: both one below 'a'
    assert tree[0][2][1][1] == (1, 5, 170)  # page 2, y from the page's bottom
    assert [label for label, *_ in tree[1][2]] == ["b.1"]


def test_write_report_lays_out_a_long_report_in_parts(tmp_path, monkeypatch):
    """write_report asks for parts for the built-in page (and none where a user's stylesheet is used)."""
    seen = []
    real = pdfparts.pdf_in_parts

    def spy(*args, **kwargs):
        seen.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(pdfparts, "pdf_in_parts", spy)
    write_report(make_results(), make_artifacts(), tmp_path / "a", formats=["pdf"])
    assert seen == [True]
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "report.css").write_text("body { color: black; }")
    write_report(make_results(), make_artifacts(), tmp_path / "b", formats=["pdf"], template_dirs=[tmp_path / "t"])
    assert seen == [True]
    assert Path(tmp_path / "b" / "report.pdf").read_bytes().startswith(b"%PDF")
