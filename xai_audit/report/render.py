"""Render the report: jinja2 templates to HTML, WeasyPrint to PDF, atomic writes.

Templates are looked up in the folders a caller gives (a user's, then
plugins'), then in the built-in ``xai_audit_templates`` package, so any
template, section or the CSS can be overridden by name. The CSS is inlined
so ``report.html`` is one file that opens offline, and the PDF renderer is
given a URL fetcher that serves ``data:`` URLs only: it reads no file and
touches no network.

The PDF is archival, PDF/A-3b, and carries its evidence: ``results.json``, the
plan as run and the fine-tuning manifest are embedded in it as attachments, byte
for byte the files written beside it, so the PDF alone holds every number it
shows. Its metadata name the report's title, the provider of the audited system
(author) and the system's intended purpose (subject) where the plan's ``system``
section states them; nothing is filled in where it does not.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import gc
import hashlib
import importlib.resources
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from jinja2 import BytecodeCache, ChoiceLoader, Environment, FileSystemLoader, StrictUndefined
from jinja2.bccache import Bucket
from markupsafe import Markup

from xai_audit.files import atomic_write, shown, write_together
from xai_audit.judge.recommend import MANIFEST_NAME, manifest_csv
from xai_audit.report.artifacts import ReportArtifacts
from xai_audit.report.display import breakable_runs, column_widths, for_display
from xai_audit.report.errors import ReportError, URLRefusedError  # noqa: F401 - URLRefusedError re-exported
from xai_audit.report.figcache import figure_store, print_copy
from xai_audit.report.pdfdoc import (  # noqa: F401 - EVIDENCE re-exported
    EVIDENCE,
    PDF_VARIANT,
    PLAN_NAME,
    data_only_url_fetcher,
)
from xai_audit.report.pdfdoc import attachments as _attachments
from xai_audit.report.pdfdoc import laid_out as _document
from xai_audit.report.tables import csv_tables, plan_as_run

if TYPE_CHECKING:
    from xai_audit.report.pdfworker import PdfWorker

#: the published JSON Schema of results.json, written beside each one
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schema" / "results.schema.json"

#: The page template and the stylesheet, by template name.
PAGE_TEMPLATE = "report.html"
CSS_TEMPLATE = "report.css"
#: Output formats and the file each writes.
FILENAMES = {"html": "report.html", "pdf": "report.pdf", "json": "results.json", "card": "README.md"}
def builtin_template_dir() -> Path:
    """The folder of the built-in templates (the ``xai_audit_templates`` package)."""
    try:
        return Path(str(importlib.resources.files("xai_audit_templates")))
    except ModuleNotFoundError:
        # A source checkout that was not installed: the repo's top-level templates/.
        return Path(__file__).resolve().parents[2] / "templates"


#: What a page is rendered for: ``screen`` (report.html: every row, every figure) or ``print`` (the PDF: a
#: table shows its first rows, the plan as run is named as the attachment it is). Templates read it as
#: ``medium``, macros included.
MEDIA = ("screen", "print")


class _CompiledTemplates(BytecodeCache):
    """Templates compiled once per process, kept in memory (never on disk: the cache folder holds no code).

    Jinja compiles a template for every environment that loads it; the report loads each twice (screen and
    print) and a process may write several reports. Jinja keys an entry by the template's name and file and
    checks its source's checksum, so an edited template is compiled again."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


_COMPILED = _CompiledTemplates()


def make_environment(template_dirs: Sequence[Path] = (), medium: str = "screen") -> Environment:
    """A jinja2 environment: the given folders first, the built-in templates last; ``medium`` is a global."""
    if medium not in MEDIA:
        raise ReportError(f"unknown medium {medium!r}; choose from {list(MEDIA)}")
    loaders = [FileSystemLoader(str(d)) for d in template_dirs]
    loaders.append(FileSystemLoader(str(builtin_template_dir())))
    env = Environment(
        loader=ChoiceLoader(loaders),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        bytecode_cache=_COMPILED,
    )
    env.globals["medium"] = medium  # seen by imported macros too (they get no context)
    env.globals["column_widths"] = column_widths  # a wide printed table's columns sized by what they hold
    env.filters["for_medium"] = _printed_figure if medium == "print" else _as_is  # a figure's data URI
    return env


def _as_is(value: Any) -> Any:
    return value


def render_html(context: Mapping[str, Any], template_dirs: Sequence[Path] = (), page: str | None = None,
                medium: str = "screen") -> str:
    """The report (or another ``page`` template) as one self-contained HTML page (CSS inlined, images as data URIs).

    ``medium="print"`` renders the page the PDF is made from: the same sections and figures, each table cut to
    its first rows (every row stays in the HTML, tables/*.csv and the attached results.json), the plan as run
    named as its attachment rather than printed; what WeasyPrint is not given it does not lay out."""
    env = make_environment(template_dirs, medium)
    css_source, _, _ = env.loader.get_source(env, CSS_TEMPLATE)  # type: ignore[union-attr]
    # The stylesheet is trusted template text, not data; only guard the </style> end.
    css = Markup(css_source.replace("</", "<\\/"))
    # Every string the page shows is cut to DISPLAY_LIMIT here, whatever built it (see report/display.py).
    html = env.get_template(page or PAGE_TEMPLATE).render({**for_display(dict(context)), "css": css})
    return breakable_runs(html) if medium == "print" else html


def render_pdf(html: str, path: Path, attachments: Mapping[str, bytes] | None = None) -> None:
    """Write ``html`` as a PDF/A-3b to ``path`` (atomically), fetching only ``data:`` URLs; ``attachments``
    (file name -> bytes) are embedded in it."""
    atomic_write(Path(path), _pdf_bytes(html, attachments))


def write_report(
    results: dict,
    artifacts: ReportArtifacts,
    out_dir: Path,
    formats: list[str] = ["html", "pdf", "json"],  # noqa: B006 - never mutated
    template_dirs: list[Path] = [],  # noqa: B006 - never mutated
    figure_cache: Path | None = None,
    extra: Mapping[str, bytes | None] | None = None,
    then_exit: bool = False,
    pdf_worker: PdfWorker | None = None,
) -> dict[str, Path]:
    """Render every requested format, then write each file atomically.

    Beside the formats it always writes the plan as run (:data:`PLAN_NAME`) and the fine-tuning manifest,
    the evidence the PDF embeds. Figures are kept by content in ``figure_cache`` (default: the cache
    folder the run used, from results.json), so a re-run over the same results draws none again.
    ``extra``: more files of the report by name (the command line's ``run.log`` and ``checks.xml``), written
    with the others; a name mapped to ``None`` is not part of this report, and one an earlier write left
    there is removed, so the folder never mixes two runs. ``then_exit``: the process ends once this report is
    written (the ``xai-audit`` command's last report): Python's cyclic garbage collector, paused while
    WeasyPrint makes the PDF, is left off, since collecting WeasyPrint's garbage (0.4-0.5 s for the demo's
    half a million objects) would only free memory the process is about to give back. ``pdf_worker``: a
    process started before the audit that makes the PDF while this one renders and writes the rest
    (report/pdfworker.py, the ``xai-audit`` command's); the PDF is the same without it.

    Everything is rendered in memory before the first file is written, so a
    failure leaves no partial report; each file goes to a temporary name in
    ``out_dir`` and is renamed into place, so a reader never opens a
    half-written file. Returns the path written for each format (the plan as run and the manifest are
    at ``out_dir / PLAN_NAME`` and ``out_dir / MANIFEST_NAME``).
    """
    unknown = [f for f in formats if f not in FILENAMES]
    if unknown:
        raise ReportError(f"unknown report format(s) {unknown}; choose from {sorted(FILENAMES)}")
    out_dir = Path(out_dir)
    payloads: dict[str, bytes] = {}
    # results.json is final here: its bytes are written as they are and embedded in the PDF as they are
    results_bytes = _results_bytes(results)
    evidence = {
        "results.json": results_bytes,
        PLAN_NAME: plan_as_run(results),
        MANIFEST_NAME: manifest_csv(results.get("recommendations") or []).encode("utf-8"),
    }
    job: tuple | None = None  # _pdf_bytes's: print page, attachments, date, bookmarks, figures, parts, their cache
    html: bytes | None = None
    with _earlier_objects_frozen():  # everything drawn, rendered and laid out for this report
        if "html" in formats or "pdf" in formats:
            from xai_audit.report.context import build_context

            cache = figure_cache if figure_cache is not None else _run_cache_dir(results)
            with figure_store(cache):
                context = build_context(results, artifacts)
                if "pdf" in formats:  # first, so a worker lays it out while the rest is rendered here
                    with _figures_by_reference() as figures:
                        printed = shown(render_html(context, template_dirs, medium="print"))
                    job = (printed, evidence, _moment(results), bookmark_labels(context["toc"]), figures,
                           _builtin_page(template_dirs), cache)
                    if pdf_worker is not None:
                        pdf_worker.submit(*job)
                if "html" in formats:  # odd file-name bytes escaped
                    html = shown(render_html(context, template_dirs)).encode("utf-8")
        # the files in the order they are written: results.json's neighbours first, the formats after
        if "json" in formats:
            payloads["json"] = results_bytes
            payloads["schema"] = SCHEMA_PATH.read_bytes()
            payloads.update({f"tables/{name}": shown(text).encode("utf-8")
                             for name, text in csv_tables(results).items()})
        payloads[PLAN_NAME] = evidence[PLAN_NAME]
        payloads[MANIFEST_NAME] = evidence[MANIFEST_NAME]
        if "card" in formats:  # a Hugging Face model card (README.md) from the results alone
            from xai_audit.report.card import model_card

            payloads["card"] = model_card(results, template_dirs).encode("utf-8")
        if html is not None:
            payloads["html"] = html
        if job is not None:
            payloads["pdf"] = (pdf_worker.result(collect_after=not then_exit) if pdf_worker is not None
                               else _pdf_bytes(*job, collect_after=not then_exit))
    written = {}  # the report folder is made by write_together, and removed again if the write fails
    files: dict[Path, bytes] = {}
    for name, data in payloads.items():  # beside results.json: its JSON Schema, the tables as CSV, the evidence
        if name in FILENAMES:
            continue
        path = out_dir / ("results.schema.json" if name == "schema" else name)
        files[path] = data
    for fmt in formats:
        path = out_dir / FILENAMES[fmt]
        files[path] = payloads[fmt]
        written[fmt] = path
    for name, data in (extra or {}).items():
        if data is not None:
            files[out_dir / name] = data
    # every file whole on disk before any is renamed into place, results.json last: a report folder
    # whose results.json is there holds the whole report, even after a kill mid-write
    write_together(files, last=out_dir / FILENAMES["json"], folders="report folder",
                   remove=[out_dir / name for name, data in (extra or {}).items() if data is None])
    return written


def _builtin_page(template_dirs: Sequence[Path]) -> bool:
    """Whether the report's page and stylesheet are the built-in ones (not a user's), so that its PDF may be
    laid out in parts (report/pdfparts.py)."""
    env = make_environment(template_dirs, "print")
    builtin = builtin_template_dir().resolve()
    for name in (PAGE_TEMPLATE, CSS_TEMPLATE):
        _, filename, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
        if filename is None or Path(filename).resolve().parent != builtin:
            return False
    return True


def _results_bytes(results: Mapping[str, Any]) -> bytes:
    try:
        text = json.dumps(results, indent=2, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ReportError(f"results are not plain JSON (no NaN, no arrays): {exc}") from exc
    # a path whose name is not UTF-8 (a lone surrogate in Python) is kept as a JSON \udcXX escape, which
    # reads back as the same path (xai-audit verify finds the file); every other character is UTF-8
    return (text + "\n").encode("utf-8", "backslashreplace")


def _run_cache_dir(results: Mapping[str, Any]) -> Path | None:
    """The cache folder the audit ran with (results.json's ``run.cache.dir``), where figures are kept beside
    the steps; None when the run had no cache or the folder is not there (a report read back elsewhere)."""
    folder = ((results.get("run") or {}).get("cache") or {}).get("dir")
    return Path(folder) if folder and Path(folder).is_dir() else None


def _finished(results: Mapping[str, Any]) -> datetime | None:
    run = results.get("run") or {}
    value = run.get("finished") or run.get("started") or results.get("finished") or results.get("started")
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc) if moment else None


def _moment(results: Mapping[str, Any]) -> datetime:
    """When the audit finished (UTC): the date of the embedded files; now when results.json does not say."""
    return _finished(results) or datetime.now(timezone.utc)


# -- PDF -------------------------------------------------------------------------


#: the scheme of a figure the print page refers to rather than embeds (:func:`_figures_by_reference`)
FIGURE_SCHEME = "xai-audit-figure"
_REFERENCED: contextvars.ContextVar[dict[str, tuple[bytes, str]] | None] = contextvars.ContextVar(
    "xai_audit_referenced_figures", default=None)


@contextlib.contextmanager
def _figures_by_reference() -> Iterator[dict[str, tuple[bytes, str]]]:
    """While open, the print page names each figure ``xai-audit-figure:<sha256>`` and the figure's bytes go to
    the dict it yields, which the PDF's URL fetcher serves: WeasyPrint's pure-Python HTML parser then reads a
    page of 0.3 MB rather than 7 MB of base64 (0.5 s of the demo's PDF). A page rendered outside it embeds
    every figure as a data: URI, as report.html does."""
    figures: dict[str, tuple[bytes, str]] = {}
    token = _REFERENCED.set(figures)
    try:
        yield figures
    finally:
        _REFERENCED.reset(token)


def _printed_figure(uri: Any) -> Any:
    """A figure's data URI in the print page: its print copy, by reference inside :func:`_figures_by_reference`."""
    if not isinstance(uri, str):  # no figure (one that could not be drawn has no src)
        return uri
    copy = print_copy(uri)
    figures = _REFERENCED.get()
    head, sep, data = copy.partition(";base64,")
    if figures is None or not sep or not head.startswith("data:"):
        return copy
    body = base64.b64decode(data)
    url = f"{FIGURE_SCHEME}:{hashlib.sha256(body).hexdigest()}"
    figures[url] = (body, head[len("data:"):])
    return url


def _pdf_bytes(html: str, attachments: Mapping[str, bytes] | None = None, when: datetime | None = None,
               bookmarks: Mapping[str, str] | None = None,
               figures: Mapping[str, tuple[bytes, str]] | None = None, in_parts: bool = False,
               part_cache: Path | None = None, collect_after: bool = True) -> bytes:
    """The PDF/A-3b of ``html``; ``attachments`` (file name -> bytes) embedded, dated ``when``; ``bookmarks``
    renames outline entries (a heading's text runs its number into its title: "1Summary" -> "1 Summary");
    ``figures``: the figures ``html`` refers to (:func:`_figures_by_reference`); ``in_parts``: ``html`` is the
    built-in report's print page, which may be laid out in parts, side by side and kept in ``part_cache`` (a
    run's cache folder) by content (report/pdfparts.py); ``collect_after``: False leaves the cyclic collector
    off after the PDF (:func:`_collector_paused`)."""
    when = (when or datetime.now(timezone.utc)).replace(tzinfo=None)  # WeasyPrint writes it as UTC
    labels, figures = dict(bookmarks or {}), dict(figures or {})
    with _collector_paused(resume=collect_after):
        if in_parts:
            from xai_audit.report.pdfparts import pdf_in_parts

            made = pdf_in_parts(html, attachments, when, labels, figures, part_cache)
            if made is not None:
                return made
        fetcher = data_only_url_fetcher(figures)
        document = _document(html, labels, fetcher)
        return document.write_pdf(pdf_variant=PDF_VARIANT, attachments=_attachments(attachments, when, fetcher))


@contextlib.contextmanager
def _earlier_objects_frozen() -> Iterator[None]:
    """Everything alive before the report is rendered (the audit's results and artifacts, the model, torch) left
    out of Python's cyclic garbage collections while it is rendered (``gc.freeze``), and put back after.

    Drawing figures and rendering pages makes many short-lived objects, and each collection of the oldest
    generation walked everything the audit left alive, for nothing to free: after the demo's uncached audit
    that was about 490,000 objects and 1.2 s of the report's 22 s. The report's own garbage is still collected;
    a cycle that was already garbage before is collected after. A program that froze objects itself keeps them
    frozen (nothing is frozen or put back here then)."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def _collector_paused(resume: bool = True) -> Iterator[None]:
    """Python's cyclic garbage collector off while WeasyPrint lays out and writes the PDF.

    WeasyPrint makes hundreds of thousands of small objects, most of them alive until the PDF is written;
    every full collection during that walks all of them (and everything else alive: the audit's results,
    torch) for almost nothing to free. Measured on the demo's 118 pages: 9.6 -> 7.9 s, for 50 MB more at the
    peak. Its garbage is collected with the next collection after it. ``resume=False`` leaves the collector
    off when the block ends well, for a process that ends with it (``write_report(then_exit=True)``); after an
    error it is back on, for the process goes on to report the error."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    except BaseException:
        if was_on:
            gc.enable()
        raise
    if was_on and resume:
        gc.enable()


def bookmark_labels(sections: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """A section heading's text as WeasyPrint reads it ("1Summary of findings") -> its outline label
    ("1 Summary of findings")."""
    return {f"{s['number']}{s['title']}": f"{s['number']} {s['title']}" for s in sections}
