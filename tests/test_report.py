"""The report layer: context, HTML, PDF, escaping, offline rendering, atomic writes."""

from __future__ import annotations

import base64
import copy
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from xai_audit.report import ReportArtifacts, write_report
from xai_audit.report.context import SECTIONS, build_context
from xai_audit.report.figures import class_colors, explanation_grid
from xai_audit.report.render import (
    ReportError,
    URLRefusedError,
    builtin_template_dir,
    data_only_url_fetcher,
    render_html,
)
from xai_audit.contract.types import Explanation

CLASSES = ["happy", "sad", "neutral", "angry", "disgust", "fear", "surprise"]
SAMPLE_IDS = ["face-0001", "face-0017", "face-0042", "face-0108"]
#: the sections every report has (Discovery appears only when the plan lists discoverers: tests/test_discovery.py)
ALWAYS = [(anchor, title) for anchor, title in SECTIONS if anchor != "discovery"]
HEADINGS = [title for _, title in ALWAYS]
HOSTILE_SCRIPT = "<script>alert(1)</script>"
HOSTILE_IMG = "<img src=x onerror=alert(1)>"
HOSTILE_JINJA = "{{ 7*7 }}"


def _wilson(correct: int, n: int, z: float = 1.959964) -> list[float]:
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def make_results(classes: list[str] = CLASSES, sample_ids: list[str] = SAMPLE_IDS,
                 title: str = "Emotion classifier audit", failure: str | None = None) -> dict:
    """A realistic results dict following docs/results-schema.md (schema 1.0)."""
    rng = np.random.default_rng(0)
    k = len(classes)
    matrix = rng.integers(0, 4, size=(k, k))
    matrix[np.diag_indices(k)] = rng.integers(40, 60, size=k)
    matrix[1, 2] = 14  # sad mistaken for neutral
    n = int(matrix.sum())
    correct = int(np.trace(matrix))
    per_class = [
        {
            "class": name,
            "n": int(matrix[i].sum()),
            "recall": round(float(matrix[i, i] / matrix[i].sum()), 4),
            "precision": round(float(matrix[i, i] / matrix[:, i].sum()), 4),
            "predicted_share": round(float(matrix[:, i].sum() / n), 4),
        }
        for i, name in enumerate(classes)
    ]
    groups = [("I-II", 140, 0.936), ("III-IV", 180, 0.911), ("V-VI", 46, 0.783)]
    error = failure or "DataError: data set 'synthetic-faces' has no region mask named 'eyes'"
    return {
        "schema_version": "1.0",
        "tool": {"name": "xai-audit", "version": "0.1.0"},
        "title": title,
        "started": "2024-05-02T09:14:03Z",
        "finished": "2024-05-02T09:17:41Z",
        "seed": 0,
        "plan": {
            "model": {"adapter": "torch", "path": "models/emotion-cnn.pt", "trusted": True},
            "dataset": {"loader": "synthetic-faces", "n": n, "seed": 0},
            "explainers": [{"integrated-gradients": {"steps": 32}}],
            "hypotheses": [{"grayscale": {}}, {"group-accuracy": {"by": ["skin_tone"]}},
                           {"occlude-regions": {"regions": ["eyes", "mouth"]}}],
            "report": {"title": title, "formats": ["html", "pdf", "json"]},
        },
        "provenance": {
            "model": {
                "adapter": "torch",
                "description": {"architecture": "SmallCNN", "parameters": 184_327, "input_size": [64, 64]},
                "fingerprint": "sha256:" + "3f9a" * 16,
                "files": [{
                    "path": "models/emotion-cnn-with-a-rather-long-name-v2.pt",
                    "sha256": "9b1c6e0a" * 8,
                    "bytes": 742_118,
                }],
            },
            "dataset": {
                "loader": "synthetic-faces",
                "description": {"n_samples": n, "image_size": 64, "group_attributes": ["skin_tone"],
                                "source": "generated (seed 0)"},
                "fingerprint": "sha256:" + "a7e2" * 16,
                "files_manifest_sha256": "e3b0c442" * 8,
                "n_files": 0,
            },
            "plugins": [
                {"kind": "model-adapter", "name": "torch", "version": "0.1.0", "package": "xai-audit"},
                {"kind": "dataset", "name": "synthetic-faces", "version": "0.1.0", "package": "xai-audit"},
                {"kind": "explainer", "name": "integrated-gradients", "version": "0.1.0", "package": "xai-audit"},
                {"kind": "hypothesis", "name": "grayscale", "version": "0.1.0", "package": "xai-audit"},
                {"kind": "hypothesis", "name": "group-accuracy", "version": "0.1.0", "package": "xai-audit"},
            ],
            "environment": {"python": "3.11.7", "platform": "Linux-6.1-x86_64", "torch": "2.3.1",
                            "numpy": "1.26.4", "device": "cpu"},
        },
        "classes": classes,
        "samples": {"n": n, "ids_sha256": "5d41402a" * 8, "labelled": True},
        "accuracy": {"value": round(correct / n, 4), "ci": _wilson(correct, n), "n": n, "correct": correct},
        "confusion_matrix": matrix.tolist(),
        "per_class": per_class,
        "prediction_share": {row["class"]: row["predicted_share"] for row in per_class},
        "explainers": {
            "integrated-gradients": {
                "status": "ok",
                "plugin": "integrated-gradients",
                "options": {"steps": 32, "internal_batch_size": 16, "baseline": "black"},
                "n_samples": len(sample_ids),
                "sample_ids": list(sample_ids),
                "targets": [0, 1, 2, 2],
                "scalars": {"mean_convergence_delta": 0.0123, "max_convergence_delta": 0.0481},
                "tables": {},
                "notes": ["Targets are the predicted classes.", "Baseline: an all-black image."],
            }
        },
        "hypotheses": {
            "grayscale": {
                "status": "ok",
                "plugin": "grayscale",
                "options": {},
                "claim": "Removing colour lowers accuracy: the model relies on colour.",
                "metric": "accuracy",
                "before": 0.905,
                "after": 0.742,
                "effect": 0.163,
                "ci": [0.121, 0.205],
                "p_value": 2.1e-6,
                "p_value_adjusted": 6.3e-6,
                "verdict": "supported",
                "n": n,
                "test": "McNemar exact test",
                "breakdown": {
                    "per_class": [
                        {"class": name, "n": row["n"], "before": row["recall"],
                         "after": round(row["recall"] * 0.8, 4)}
                        for name, row in zip(classes, per_class)
                    ]
                },
                "examples": list(sample_ids[:3]),
                "details": {"flipped_to_wrong": 71, "flipped_to_right": 11},
            },
            "group-accuracy": {
                "status": "ok",
                "plugin": "group-accuracy",
                "options": {"by": ["skin_tone"]},
                "claim": "Accuracy differs between skin tones.",
                "metric": "accuracy gap",
                "before": 0.936,
                "after": 0.783,
                "effect": 0.153,
                "ci": [0.041, 0.265],
                "p_value": 0.0042,
                "p_value_adjusted": None,
                "verdict": "supported",
                "n": 366,
                "test": "chi-squared test of independence",
                "breakdown": {
                    "skin_tone": [
                        {"group": g, "n": m, "accuracy": a, "ci": _wilson(round(a * m), m)}
                        for g, m, a in groups
                    ]
                },
                "examples": [],
                "details": {},
            },
            "occlude-regions": {
                "status": "failed",
                "plugin": "occlude-regions",
                "options": {"regions": ["eyes", "mouth"]},
            },
        },
        "findings": [
            {"severity": "high", "title": "Accuracy drops by 16.3 points without colour",
             "detail": "Grayscale images are classified correctly 74.2 % of the time against 90.5 %.",
             "source": "grayscale"},
            {"severity": "medium", "title": "Skin tone V-VI is 15 points less accurate",
             "detail": "Only 46 samples carry V-VI; the interval is wide.", "source": "group-accuracy"},
            {"severity": "info", "title": "Attributions concentrate on the mouth",
             "detail": "Most positive attribution mass lies on the mouth region.",
             "source": "integrated-gradients"},
        ],
        "failures": [{"step": "occlude-regions", "plugin": "occlude-regions", "error": error}],
        "cache": {"hits": 1, "misses": 3},
    }


def make_artifacts(sample_ids: list[str] = SAMPLE_IDS, size: int = 48) -> ReportArtifacts:
    """Random images and signed maps for the samples in ``make_results``."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images, maps = {}, []
    for i, sid in enumerate(sample_ids):
        face = np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.08)
        image = np.stack([face * 0.9, face * 0.7, face * 0.55]) + rng.normal(0, 0.03, (3, size, size))
        images[sid] = np.clip(image, 0, 1).astype(np.float32)
        mouth = np.exp(-((xx - 0.5) ** 2 + (yy - 0.72) ** 2) / 0.01)
        eyes = np.exp(-((xx - 0.35) ** 2 + (yy - 0.4) ** 2) / 0.005)
        maps.append((mouth - 0.6 * eyes) * (0.01 + 0.005 * i) + rng.normal(0, 0.0005, (size, size)))
    explanation = Explanation(
        method="integrated-gradients",
        sample_ids=list(sample_ids),
        targets=np.array([0, 1, 2, 2]),
        maps=np.stack(maps).astype(np.float32),
        signed=True,
        scalars={"mean_convergence_delta": 0.0123},
    )
    return ReportArtifacts(
        images=images,
        explanations={"integrated-gradients": explanation},
        predictions={sid: (p, prob) for sid, p, prob in zip(sample_ids, [0, 1, 2, 2], [0.97, 0.64, 0.81, 0.55])},
        labels={sid: label for sid, label in zip(sample_ids, [0, 1, 2, 1])},
    )


def make_hostile() -> tuple[dict, ReportArtifacts]:
    classes = list(CLASSES)
    classes[1] = f"sad {HOSTILE_IMG}"
    classes[2] = f"neutral {HOSTILE_JINJA}"
    ids = list(SAMPLE_IDS)
    ids[0] = f"face-{HOSTILE_JINJA}-{HOSTILE_SCRIPT}"
    results = make_results(
        classes=classes,
        sample_ids=ids,
        title=f"Audit {HOSTILE_SCRIPT} {HOSTILE_JINJA}",
        failure=f"ValueError: {HOSTILE_SCRIPT} {HOSTILE_IMG} {HOSTILE_JINJA}",
    )
    return results, make_artifacts(ids)


@pytest.fixture
def results() -> dict:
    return make_results()


@pytest.fixture
def artifacts() -> ReportArtifacts:
    return make_artifacts()


@pytest.fixture
def html(results, artifacts) -> str:
    return render_html(build_context(results, artifacts), [])


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("report")
    return out, write_report(make_results(), make_artifacts(), out)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# -- HTML ------------------------------------------------------------------------


def test_html_has_every_section_heading_in_order(html):
    text = _text(html)
    positions = [text.find(heading) for heading in HEADINGS]
    assert all(p >= 0 for p in positions), dict(zip(HEADINGS, positions))
    body = text[text.find("Written by"):]  # after the table of contents
    assert [body.find(h) for h in HEADINGS] == sorted(body.find(h) for h in HEADINGS)
    for anchor, _ in ALWAYS:
        assert f'id="{anchor}"' in html and f'href="#{anchor}"' in html


def test_html_is_self_contained(html):
    assert 'src="http' not in html and "href=\"http" not in html
    assert 'src="file' not in html and "<link" not in html
    sources = re.findall(r"<img\b[^>]*?\bsrc=\"([^\"]*)\"", html)
    assert len(sources) >= 4  # confusion matrix, group bars, explanation grid, hypothesis
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert "<style>" in html and "@page" in html  # CSS inlined
    assert all('alt="' in tag for tag in re.findall(r"<img\b[^>]*>", html))


def test_html_shows_formatted_numbers(html, results):
    assert "p &lt; 0.001" in html  # grayscale
    assert "p = 0.004" in html  # group accuracy
    accuracy = results["accuracy"]
    lo, hi = accuracy["ci"]
    assert f"{accuracy['value'] * 100:.1f} % [{lo * 100:.1f}, {hi * 100:.1f}]" in html
    assert "90.5 % → 74.2 %" in html
    assert "+16.3 pp [+12.1, +20.5]" in html
    assert "mean_convergence_delta" in html and "0.0123" in html
    assert "red = pushes toward the predicted class".lower() in html.lower()


def test_html_escapes_hostile_strings():
    results, artifacts = make_hostile()
    html = render_html(build_context(results, artifacts), [])
    assert "<script" not in html
    assert "<img src=x" not in html and "onerror=alert(1)>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert HOSTILE_JINJA in html  # shown literally, never evaluated
    assert "face-49" not in html and "Audit &lt;script&gt;alert(1)&lt;/script&gt; 49" not in html
    text = _text(html)
    assert "face-{{ 7*7 }}-" in text  # the sample id
    assert "neutral {{ 7*7 }}" in text  # the class name
    assert "ValueError:" in text  # the failure message
    sources = re.findall(r"<img\b[^>]*?\bsrc=\"([^\"]*)\"", html)
    assert all(src.startswith("data:") for src in sources)


def test_empty_states_read_as_sentences(results, artifacts):
    results = copy.deepcopy(results)
    results["findings"] = []
    results["failures"] = []
    del results["hypotheses"]["group-accuracy"]
    del results["hypotheses"]["occlude-regions"]
    results["accuracy"] = None
    results["confusion_matrix"] = None
    results["samples"]["labelled"] = False
    text = _text(render_html(build_context(results, artifacts), []))
    assert "No finding reached significance." in text
    assert "Every step ran." in text
    assert "no labels" in text
    assert "No group analysis" in text


def test_failed_step_is_reported(html):
    text = _text(html)
    assert "occlude-regions" in text and "This step could not run." in text
    assert "has no region mask named" in text


def test_user_template_overrides_builtin(tmp_path, results, artifacts):
    (tmp_path / "sections").mkdir()
    (tmp_path / "sections" / "failures.html").write_text(
        '<section id="failures"><h2>Custom failures</h2>{{ failures.empty_text }}</section>'
    )
    html = render_html(build_context(results, artifacts), [tmp_path])
    assert "Custom failures" in html and "Summary of findings" in html


def test_builtin_templates_are_found():
    folder = builtin_template_dir()
    assert (folder / "report.html").is_file() and (folder / "report.css").is_file()


# -- figures ---------------------------------------------------------------------


def test_figures_are_small_pngs(results, artifacts):
    context = build_context(results, artifacts)
    sources = [context["accuracy"]["confusion"]["src"]]
    sources += [a["figure"]["src"] for s in context["groups"]["steps"] for a in s["attributes"]]
    sources += [s["figure"]["src"] for s in context["explainers"]["steps"]]
    sources += [s["figure"]["src"] for s in context["hypotheses"]["steps"] if s["figure"]]
    assert len(sources) == 4
    for src in sources:
        data = base64.b64decode(src.split(",", 1)[1])
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) < 150_000


def test_explanation_grid_accepts_several_explainers_and_flat_maps():
    images = [np.zeros((3, 16, 16), np.float32)] * 2
    zeros = np.zeros((2, 16, 16), np.float32)  # all-zero maps must not divide by zero
    src = explanation_grid(images, {"a": zeros, "b$": zeros + 1}, ["one", "two $x$"], signed=False)
    assert src.startswith("data:image/png;base64,")


def test_class_colors_are_fixed_and_distinct():
    colors = class_colors(CLASSES)
    assert list(colors) == CLASSES and len(set(colors.values())) == len(CLASSES)
    assert class_colors(CLASSES) == colors


# -- PDF and files -----------------------------------------------------------------


def test_pdf_renders_with_section_headings(written):
    from pypdf import PdfReader

    _, paths = written
    reader = PdfReader(io.BytesIO(paths["pdf"].read_bytes()))
    assert len(reader.pages) >= 2
    text = re.sub(r"\s+", " ", " ".join(page.extract_text() for page in reader.pages))
    for heading in HEADINGS:
        assert heading in text, heading
    assert "Page 1 of" in text


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http://example.com/x.png",
                                 "https://example.com/a.css", "ftp://example.com/f"])
def test_url_fetcher_refuses_everything_but_data(url):
    fetcher = data_only_url_fetcher()
    with pytest.raises(URLRefusedError):
        fetcher(url)


def test_url_fetcher_serves_data_urls():
    response = data_only_url_fetcher()("data:text/plain;base64,aGVsbG8=")
    body = response.read() if hasattr(response, "read") else response["string"]
    assert body == b"hello"


def test_writes_are_atomic_and_complete(written):
    out, paths = written
    assert set(paths) == {"html", "pdf", "json"}
    assert sorted(p.name for p in out.iterdir()) == ["finetune_manifest.csv", "plan-as-run.yaml", "report.html", "report.pdf",
                                                     "results.json", "results.schema.json", "tables"]
    assert not [p for p in out.rglob(".*")]  # no temporary file left behind
    assert json.loads(paths["json"].read_text())["schema_version"] == "1.0"
    assert paths["pdf"].read_bytes().startswith(b"%PDF")
    assert paths["html"].read_text().lstrip().startswith("<!DOCTYPE html>")


def test_bad_results_leave_no_file(tmp_path, results, artifacts):
    results["accuracy"]["value"] = float("nan")
    with pytest.raises(ReportError):
        write_report(results, artifacts, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unknown_format_is_an_error(tmp_path, results, artifacts):
    with pytest.raises(ReportError, match="unknown report format"):
        write_report(results, artifacts, tmp_path, formats=["docx"])


def test_json_only_writes_the_json_its_schema_and_tables(tmp_path, results, artifacts):
    paths = write_report(results, artifacts, tmp_path, formats=["json"])
    assert list(paths) == ["json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finetune_manifest.csv", "plan-as-run.yaml", "results.json",
                                                          "results.schema.json", "tables"]


def test_report_renders_without_artifacts(results):
    html = render_html(build_context(results, ReportArtifacts()), [])
    assert "were not available to the report" in _text(html)
    assert "Summary of findings" in html


def test_an_equivalence_table_is_shown_whole_not_as_a_second_accuracy_table(results, artifacts):
    """A group table that holds each group's accuracy beside its equivalence test (difference, 90 % CI, TOST p,
    power) is not a group-accuracy table: read as one, it lost every column but n and accuracy and showed
    empty intervals under "Accuracy by skin_tone: equivalence"."""
    step = results["hypotheses"]["group-accuracy"]
    step["breakdown"]["skin_tone: equivalence"] = [
        {"group": row["group"], "n": row["n"], "n rest": 900, "accuracy": row["accuracy"], "accuracy rest": 0.9,
         "difference": row["accuracy"] - 0.9, "90 % ci": [-0.02, 0.03], "tost p": 0.0123, "power": 0.81,
         "equivalent": True}
        for row in step["breakdown"]["skin_tone"]
    ]
    context = build_context(results, artifacts)
    item = next(s for s in context["groups"]["steps"] if s["name"] == "group-accuracy")
    assert [a["name"] for a in item["attributes"]] == ["skin_tone"]
    text = _text(render_html(context, []))
    assert "Accuracy by skin_tone: equivalence" not in text
    assert "tost p" in text and "0.0123" in text


def test_the_collector_comes_back_after_the_pdf_unless_the_process_ends_with_it():
    import gc

    from xai_audit.report.render import _collector_paused

    assert gc.isenabled()
    try:
        with _collector_paused():
            assert not gc.isenabled()
        assert gc.isenabled()
        with _collector_paused(resume=False):
            pass
        assert not gc.isenabled()  # the xai-audit command's last report: its garbage dies with the process
        gc.enable()
        with pytest.raises(RuntimeError), _collector_paused(resume=False):
            raise RuntimeError("the PDF failed")
        assert gc.isenabled()  # the process goes on to report the error
    finally:
        gc.enable()


def test_write_report_then_exit_leaves_the_collector_off(tmp_path):
    import gc

    try:
        write_report(make_results(), make_artifacts(), tmp_path / "a", formats=["pdf"])
        assert gc.isenabled()
        write_report(make_results(), make_artifacts(), tmp_path / "b", formats=["pdf"], then_exit=True)
        assert not gc.isenabled()
        assert (tmp_path / "b" / "report.pdf").read_bytes().startswith(b"%PDF")
    finally:
        gc.enable()


def test_what_was_alive_before_the_report_is_left_out_of_collections_while_it_renders(tmp_path, monkeypatch):
    """write_report freezes the objects alive before it (gc.freeze: the audit's results, the model) while it
    renders, and puts them back after, also when rendering fails; a program's own freeze is left as it was."""
    import gc

    import xai_audit.report.context as context_module

    seen = []
    build = context_module.build_context

    def watched(*args, **kwargs):
        seen.append(gc.get_freeze_count())
        return build(*args, **kwargs)

    monkeypatch.setattr(context_module, "build_context", watched)
    assert gc.get_freeze_count() == 0
    write_report(make_results(), make_artifacts(), tmp_path / "a", formats=["html"])
    assert seen[-1] > 0 and gc.get_freeze_count() == 0

    def broken(*args, **kwargs):
        raise RuntimeError("a template failed")

    monkeypatch.setattr(context_module, "build_context", broken)
    with pytest.raises(RuntimeError):
        write_report(make_results(), make_artifacts(), tmp_path / "b", formats=["html"])
    assert gc.get_freeze_count() == 0
    monkeypatch.setattr(context_module, "build_context", watched)
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        write_report(make_results(), make_artifacts(), tmp_path / "c", formats=["html"])
        # not frozen again (that would add the thousands of objects made since) nor put back (a frozen object
        # that dies leaves the count, so it may fall by a few)
        assert frozen - 100 < seen[-1] <= frozen and frozen - 100 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()


def test_nested_detail_values_read_as_numbers_of_four_digits_not_as_json():
    """A plugin's details (a mapping, a list of many numbers) are shown as the report shows every number, not
    as JSON with a float's seventeen digits, and cut at the value limit with an ellipsis."""
    from xai_audit.report.context import _VALUE_LIMIT, _value

    text = _value({"comparison": "each group against the rest", "equivalent": False, "power": 0.8157385960070849,
                   "ci": [0.006543868058922507, 0.055696688188483036], "missing": None})
    assert text == "{comparison: each group against the rest, equivalent: no, power: 0.8157, ci: [0.006544, 0.0557], " \
                   "missing: —}"
    long = _value([0.123456789] * 500)
    assert long.startswith("[0.1235, 0.1235") and "…" in long and len(long) <= _VALUE_LIMIT


def test_a_wide_printed_table_sizes_its_columns_by_what_they_hold():
    """In print (a fixed table layout) a wide table's columns are not equal: each gets its longest word, and
    what the page has left goes to the columns of long text, so a word is never broken beside columns of short
    numbers with room to spare; a narrow table is left to the layout."""
    from xai_audit.report.display import WIDTHS_FROM_COLUMNS, column_widths

    labels = ["region", "carries the label", "accuracy after", "effect", "ci low", "ci high", "p-value", "largest gain"]
    rows = [["eyes", "yes", "0.6529", "0.2443", "0.2248", "0.2652", "1.549e-121", "disgust +1.3 pp"],
            ["brows", "yes", "0.7038", "0.1933", "0.1747", "0.2114", "2.282e-88",
             "'disgust' +7.5 pp (descriptive: the intervention may change the label)"]]
    widths = column_widths(labels, rows)
    assert widths is not None and len(widths) == 8 and 95 <= sum(widths) <= 100
    assert widths[-1] == max(widths) and widths[-1] >= 2 * widths[0]  # the long text gets the room
    assert widths[6] > widths[3]  # 1.549e-121 needs more than 0.2443
    assert column_widths(labels[:WIDTHS_FROM_COLUMNS - 1], [r[:WIDTHS_FROM_COLUMNS - 1] for r in rows]) is None
    short = column_widths(labels[:6], [r[:6] for r in rows])  # every text fits: shared as the texts are long
    assert short is not None and short[2] > short[3]
    huge = column_widths([f"column {k}" for k in range(12)], [["x" * 300] * 12])  # not even the words fit
    assert huge is not None and len(set(huge)) == 1


def test_the_print_page_gives_a_wide_table_its_column_widths():
    from xai_audit.report.render import make_environment

    def table(columns: int) -> dict:
        return {"title": "t", "columns": [{"label": f"column {k}", "num": k > 0} for k in range(columns)],
                "rows": [[{"text": "a long name of a region" if k == 0 else "0.25", "num": k > 0}
                          for k in range(columns)]]}

    macro = '{% from "macros.html" import data_table %}{{ data_table(t) }}'
    printed = make_environment(medium="print").from_string(macro).render(t=table(7))
    widths = [int(w) for w in re.findall(r'<col style="width: (\d+)%">', printed)]
    assert len(widths) == 7 and widths[0] == max(widths)
    assert "<colgroup>" not in make_environment().from_string(macro).render(t=table(7))  # the screen's own layout
    assert "<colgroup>" not in make_environment(medium="print").from_string(macro).render(t=table(5))
