"""The archival PDF (issue 19): PDF/A-3b carrying results.json, the plan as run and the manifest; its metadata,
its bookmarks; two pages of verdict, a short body and an appendix; figures cached by content."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from pypdf import PdfReader

from test_report import make_artifacts, make_results
from xai_audit.report import write_report
from xai_audit.report.context import build_context
from xai_audit.report.render import PLAN_NAME

SYSTEM = {"intended_purpose": "Sort customer photos by facial expression for a feedback kiosk",
          "provider": "Example Vision Ltd", "model_version": "2.3.1"}


def _with_recommendations(results: dict) -> dict:
    results = copy.deepcopy(results)
    results["recommendations"] = [{
        "priority": 1, "action": "augment", "what": "grayscale copies", "augmentation": "grayscale", "fraction": 0.3,
        "amount": "30 % of the training images", "reason": "accuracy drops by 16 pp in grayscale",
        "source": "hypotheses.grayscale",
    }]
    return results


@pytest.fixture(scope="module")
def archived(tmp_path_factory) -> tuple[dict, Path, dict[str, Path]]:
    results = _with_recommendations(make_results())
    results["system"] = dict(SYSTEM)
    out = tmp_path_factory.mktemp("archived")
    return results, out, write_report(results, make_artifacts(), out)


def _reader(path: Path) -> PdfReader:
    return PdfReader(io.BytesIO(path.read_bytes()))


def _outline_titles(outline) -> list[str]:
    titles = []
    for entry in outline:
        titles.extend(_outline_titles(entry) if isinstance(entry, list) else [entry.title])
    return titles


def test_pdf_embeds_its_evidence_byte_for_byte(archived):
    results, out, paths = archived
    reader = _reader(paths["pdf"])
    attached = {name: data[0] for name, data in reader.attachments.items()}
    assert set(attached) == {"results.json", PLAN_NAME, "finetune_manifest.csv"}
    for name, data in attached.items():
        assert data == (out / name).read_bytes(), name  # the file beside the PDF, byte for byte
    assert json.loads(attached["results.json"]) == results
    assert yaml.safe_load(attached[PLAN_NAME]) == results["plan"]  # the plan as run reads back as itself
    assert "grayscale" in attached["finetune_manifest.csv"].decode()


def test_pdf_is_pdf_a_3b_with_metadata(archived):
    results, _, paths = archived
    reader = _reader(paths["pdf"])
    xmp = reader.trailer["/Root"]["/Metadata"].get_object().get_data().decode("utf-8")
    assert re.search(r"pdfaid:part(>|=\")3", xmp), xmp[:400]
    assert re.search(r"pdfaid:conformance(>|=\")B", xmp)
    info = reader.metadata
    assert results["title"] in info["/Title"]
    assert info["/Author"] == SYSTEM["provider"]
    assert info["/Subject"] == SYSTEM["intended_purpose"]
    html = paths["html"].read_text()
    assert f'<meta name="author" content="{SYSTEM["provider"]}">' in html


def test_metadata_absent_when_the_plan_states_no_system(tmp_path):
    results = make_results()
    results.pop("system", None)
    paths = write_report(results, make_artifacts(), tmp_path, formats=["html"])
    html = paths["html"].read_text()
    assert '<meta name="author"' not in html and '<meta name="description"' not in html  # never invented


def test_pdf_has_a_bookmark_for_every_section(archived):
    results, _, paths = archived
    titles = _outline_titles(_reader(paths["pdf"]).outline)
    toc = build_context(results, make_artifacts())["toc"]
    assert len(toc) >= 8
    for section in toc:  # "1 Summary of findings", ..., "A Explanations in detail", ...
        assert f"{section['number']} {section['title']}" in titles, (section, titles)


def test_short_body_then_an_appendix_with_the_evidence(archived):
    _, _, paths = archived
    pages = [page.extract_text() or "" for page in _reader(paths["pdf"]).pages]
    start = next(i for i, text in enumerate(pages) if re.search(r"^\s*Appendix\s*$", text, re.M))
    assert 2 <= start <= 8, start  # verdict and body of a small audit: a handful of pages
    body, appendix = " ".join(pages[:start]), " ".join(pages[start:])
    assert "Summary of findings" in pages[0]
    assert "Appendix" in _outline_titles(_reader(paths["pdf"]).outline)
    # the plan as run, the provenance and the per-image grids are in the appendix, not the body
    assert "Plan as run" in appendix and "Plan as run" not in body
    assert "file manifest sha256" in appendix and "file manifest sha256" not in body
    assert "Each row is one sample" in appendix and "Each row is one sample" not in body
    html = paths["html"].read_text()
    for anchor in ("explanation-details", "hypothesis-details", "provenance", "run"):
        assert f'href="#{anchor}"' in html and f'id="{anchor}"' in html
    # each hypothesis in the body links to its details in the appendix
    for target in re.findall(r'href="#(hypothesis-\d+-[a-z0-9-]+-details)"', html):
        assert f'id="{target}"' in html
    assert re.findall(r'href="#(hypothesis-\d+-[a-z0-9-]+-details)"', html)


def test_figures_are_cached_by_content(tmp_path):
    results, artifacts = make_results(), make_artifacts()
    cache = tmp_path / "cache"
    write_report(results, artifacts, tmp_path / "a", formats=["html"], figure_cache=cache)
    stored = sorted((cache / "figures").rglob("*.png"))
    assert len(stored) >= 4
    before = {p: p.stat().st_mtime_ns for p in stored}
    first = (tmp_path / "a" / "report.html").read_text()
    write_report(results, artifacts, tmp_path / "b", formats=["html"], figure_cache=cache)
    assert (tmp_path / "b" / "report.html").read_text() == first  # the same figures, served from the cache
    assert {p: p.stat().st_mtime_ns for p in sorted((cache / "figures").rglob("*.png"))} == before
    # a changed input draws a new figure, and only that one
    changed = copy.deepcopy(results)
    changed["confusion_matrix"][0][0] += 1
    write_report(changed, artifacts, tmp_path / "c", formats=["html"], figure_cache=cache)
    assert len(list((cache / "figures").rglob("*.png"))) == len(stored) + 1


def test_a_damaged_cached_figure_is_drawn_again(tmp_path):
    results, artifacts = make_results(), make_artifacts()
    cache = tmp_path / "cache"
    write_report(results, artifacts, tmp_path / "a", formats=["html"], figure_cache=cache)
    for path in (cache / "figures").rglob("*.png"):
        path.write_bytes(path.read_bytes()[:40])  # cut short
    write_report(results, artifacts, tmp_path / "b", formats=["html"], figure_cache=cache)
    assert (tmp_path / "b" / "report.html").read_text() == (tmp_path / "a" / "report.html").read_text()


def test_a_cached_figure_copied_over_another_is_drawn_again(tmp_path):
    """Each stored figure carries the checksum of its key and bytes: a valid PNG under another figure's name
    (tampering, or a file copied by hand) is not served as that figure."""
    results, artifacts = make_results(), make_artifacts()
    cache = tmp_path / "cache"
    write_report(results, artifacts, tmp_path / "a", formats=["html"], figure_cache=cache)
    stored = sorted((cache / "figures").rglob("*.png"))
    assert len(stored) >= 2
    for path in stored[1:]:
        path.write_bytes(stored[0].read_bytes())
    write_report(results, artifacts, tmp_path / "b", formats=["html"], figure_cache=cache)
    assert (tmp_path / "b" / "report.html").read_text() == (tmp_path / "a" / "report.html").read_text()


def _image_filters(path: Path) -> list[str]:
    """The /Filter of every image the PDF's pages draw (WeasyPrint puts them in nested form XObjects)."""
    found: list[str] = []

    def walk(resources) -> None:
        for item in ((resources or {}).get("/XObject") or {}).values():
            item = item.get_object()
            if item.get("/Subtype") == "/Image":
                found.append(str(item.get("/Filter")))
            else:
                walk(item.get("/Resources"))

    for page in _reader(path).pages:
        walk(page.get("/Resources"))
    return found


def test_the_pdf_embeds_print_copies_of_the_figures_kept_beside_them(tmp_path):
    """The PDF draws each figure from a JPEG copy (WeasyPrint embeds a JPEG as it is, and re-compresses a PNG),
    kept in the figure cache like the figure; report.html keeps the PNGs. A damaged copy is made again."""
    from PIL import Image

    results, artifacts = make_results(), make_artifacts()
    cache = tmp_path / "cache"
    paths = write_report(results, artifacts, tmp_path / "a", formats=["html", "pdf"], figure_cache=cache)
    filters = _image_filters(paths["pdf"])
    assert filters and set(filters) == {"/DCTDecode"}, filters
    html = paths["html"].read_text()
    assert "data:image/png;base64," in html and "data:image/jpeg" not in html
    copies = sorted((cache / "figures").rglob("*.jpg"))
    assert 1 <= len(copies) <= len(list((cache / "figures").rglob("*.png")))
    before = {p: p.stat().st_mtime_ns for p in copies}
    write_report(results, artifacts, tmp_path / "b", formats=["pdf"], figure_cache=cache)
    assert {p: p.stat().st_mtime_ns for p in sorted((cache / "figures").rglob("*.jpg"))} == before  # served
    for path in copies:
        path.write_bytes(path.read_bytes()[:40])  # cut short
    paths = write_report(results, artifacts, tmp_path / "c", formats=["pdf"], figure_cache=cache)
    assert set(_image_filters(paths["pdf"])) == {"/DCTDecode"}
    for path in copies:
        with Image.open(io.BytesIO(path.read_bytes()[:-32])) as copy_:  # whole again (its checksum after it)
            assert copy_.format == "JPEG" and copy_.mode == "RGB"


def test_image_grid_is_one_composed_picture():
    from PIL import Image
    import base64

    from xai_audit.report.figures import explanation_grid

    rng = np.random.default_rng(0)
    images = list(rng.random((3, 3, 24, 24)).astype(np.float32))
    maps = rng.normal(size=(3, 24, 24)).astype(np.float32)
    src = explanation_grid(images, {"a": maps, "b": -maps}, ["one", "two", "three"], signed=True)
    picture = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")
    pixels = np.asarray(picture)
    # three rows of tiles: the image column is not white, and red and blue both appear (signed maps)
    assert pixels.shape[0] > 3 * 100 and pixels.shape[1] > 3 * 100
    red = (pixels[..., 0] > 150) & (pixels[..., 2] < 90)
    blue = (pixels[..., 2] > 150) & (pixels[..., 0] < 90)
    assert red.sum() > 50 and blue.sum() > 50


@pytest.mark.slow
def test_demo_body_fits_in_twenty_pages(tmp_path, demo_cache):
    from typer.testing import CliRunner

    from xai_audit.cli import app

    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--cache-dir", str(demo_cache), "--quiet"])
    assert result.exit_code == 0, result.output
    reader = _reader(out / "report.pdf")
    pages = [page.extract_text() or "" for page in reader.pages]
    start = next(i for i, text in enumerate(pages) if re.search(r"^\s*Appendix\s*$", text, re.M))
    assert start <= 20, f"the body runs {start} pages"
    assert set(reader.attachments) == {"results.json", PLAN_NAME, "finetune_manifest.csv"}
    assert reader.attachments["results.json"][0] == (out / "results.json").read_bytes()


def test_templates_compiled_once_per_process_follow_an_edit(tmp_path):
    """Compiled templates are kept in memory for the process (the report loads each twice, screen and print);
    a template edited between two reports is rendered as it now reads."""
    from xai_audit.report.render import render_html

    page = tmp_path / "mine.html"
    page.write_text("<p>{{ title }} one</p>")
    assert render_html({"title": "t"}, [tmp_path], page="mine.html") == "<p>t one</p>"
    assert render_html({"title": "t"}, [tmp_path], page="mine.html", medium="print") == "<p>t one</p>"
    page.write_text("<p>{{ title }} two</p>")
    assert render_html({"title": "t"}, [tmp_path], page="mine.html") == "<p>t two</p>"


def test_a_figure_store_renames_whole_entries_and_survives_a_folder_it_cannot_write(tmp_path):
    """An entry is written under a temporary name and renamed when whole (none left behind); a store whose
    folder cannot be made records why and costs only the redraw."""
    import base64

    from PIL import Image

    from xai_audit.report.figcache import FigureStore

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    key = "ab" * 32
    store = FigureStore(tmp_path)
    store.put(key, uri)
    assert store.get(key) == uri and not store.errors
    assert [p.name for p in (tmp_path / "figures").rglob("*")] == ["ab", f"{key}.png"]
    (tmp_path / "blocked").write_text("a file, not a folder")
    blocked = FigureStore(tmp_path / "blocked")
    blocked.put(key, uri)
    assert blocked.get(key) is None
    assert len(blocked.errors) == 1 and "cannot store a figure" in blocked.errors[0]
