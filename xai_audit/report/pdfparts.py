"""The report's PDF laid out in parts, side by side and from a cache, then made one PDF.

WeasyPrint lays a document out on one core, and laying out the demo's hundred pages was most of a cached
re-run (issue 19 asks for one under 10 s on 2 cores). So the print page is cut where the stylesheet already
starts a new page: before the body, before the appendix and before each of its sections but the first
(:func:`cut`). Parts are laid out by WeasyPrint in two processes at once, this one and a helper forked from
it, and pypdf makes them one PDF (:func:`merge`). A part after the first is the same on a re-run unless the
audit changed (the body, the evidence: explanations, hypotheses, fine-tuning data), so its PDF is kept by
content in the run's cache folder, beside the figures, and not laid out again (:class:`PartStore`); the
first part (the verdict, which names the run's time) and the parts that record the run (provenance,
timings) are laid out every time.

What WeasyPrint does across a whole document is done here across the cuts:

* **Page numbers.** "Page X of Y" needs every part's page count. The parts are laid out without their
  numbered margin box (:data:`NUMBERED_BOX`). Once every count is known, WeasyPrint lays out the numbers of
  every page as a document of their own (the report's stylesheet, pages that hold nothing but that box), and
  each is drawn over its page. A margin box takes no room from a page's content, so no page is laid out
  differently.
* **Links across a cut.** WeasyPrint drops a link whose anchor is not in its document, so a link to another
  part's anchor is given a URL of a scheme of its own (:data:`ACROSS`), and made an internal link again in the
  one PDF, whose named destinations are every part's.
* **The outline.** It is built from every part's bookmarks in order, by WeasyPrint's rule: a bookmark's depth
  follows its level, a skipped level is skipped (:func:`bookmark_tree`).
* **The running title** (``string(doctitle)``) is set by the report's title, in the first part. Each other
  part starts with a copy of that heading, out of the flow and unseen. The boxes a cut crosses (the report,
  the appendix) lose their margin, border and padding on the cut's side, as a box broken across pages does.

Everything else of the PDF is the first part's: the PDF/A-3b metadata, the output intent, the attachments;
the other parts give their pages (their own metadata is left out of their page, so that it is the same on a
re-run). Only the built-in page and stylesheet are cut (they number pages in one box and carry nothing else
across a cut), and only a print page of :data:`MIN_CHARACTERS` or more; any other is laid out whole. Parts
are laid out only where helpers can be forked: in the ``xai-audit`` command's PDF worker, a process of one
thread. A library call, whose process may run threads (torch's), lays the PDF out whole, as before: in one
process the parts' fixed costs (about 0.2 s a part), the page numbers and the merge would cost CPU and save
no time. The pages are the same either way (tests compare them pixel for pixel); the parts' PDF is the same
bytes whether a part came from the cache or was laid out here or in a helper.
"""

from __future__ import annotations

import hashlib
import html as html_text
import io
import json
import os
import pickle
import re
import signal
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import unquote

#: print pages shorter than this (characters) are laid out whole: what the cut costs (a second process, the
#: page numbers, the merge: about a second of CPU) would eat what it saves
MIN_CHARACTERS = 150_000
#: a part after the first shorter than this (characters, the page's head not counted) is joined to the next
MIN_PART = 20_000
#: set to 0 to lay the PDF out whole
ENV = "XAI_AUDIT_PDF_PARTS"
#: the margin box that shows "Page X of Y" in the built-in stylesheet
NUMBERED_BOX = "bottom-center"
#: the URL scheme of a link whose anchor is in another part, until the parts are one PDF
ACROSS = "xai-audit-across"
#: every margin box of a page (CSS Paged Media)
MARGIN_BOXES = ("top-left-corner", "top-left", "top-center", "top-right", "top-right-corner", "right-top",
                "right-middle", "right-bottom", "bottom-right-corner", "bottom-right", "bottom-center",
                "bottom-left", "bottom-left-corner", "left-bottom", "left-middle", "left-top")
#: bump to lay out every cached part again
PART_FORMAT = 1

_APPENDIX = '<div class="appendix" id="appendix">'
_BODY = '<div class="report-body">'
_MAIN = '<main class="report">'
_TITLE = re.compile(r'<h1 class="report-title">.*?</h1>', re.S)
_BLOCK_TAG = re.compile(r'<(/?)(div|section)\b[^>]*>')
_ID = re.compile(r'\sid="([^"]*)"')
_HREF = re.compile(r'href="#([^"]*)"')
#: a part's own metadata (its date, author, subject): the one PDF has the first part's
_METADATA = re.compile(r'<meta name="[^"]*" content="[^"]*">\n?|<title>.*?</title>\n?', re.S)
#: the attributes that mark a box a cut crosses: it goes on from the part before, or on into the part after
_CONTINUED, _CONTINUES = "data-xai-audit-continued", "data-xai-audit-continues"

#: each part: no page numbers (they are drawn over the one PDF), and no decoration on a crossing box's cut side;
#: a part after the first starts on a page that is not the document's first, whose running head the built-in
#: stylesheet leaves out (``@page :first``): it is given the head every other page has (a page of the appendix
#: has its own, a named page's rule, which wins over this one)
_PART_CSS = (f"@page {{ @{NUMBERED_BOX} {{ content: none !important; }} }} "
             f"[{_CONTINUED}] {{ margin-top: 0 !important; padding-top: 0 !important; border-top-width: 0 !important;"
             " break-before: auto !important; } "
             f"[{_CONTINUES}] {{ margin-bottom: 0 !important; padding-bottom: 0 !important;"
             " border-bottom-width: 0 !important; }")
_NOT_FIRST_CSS = "@page :first { @top-center { content: string(doctitle); } }"
#: the page numbers' document: every other margin box empty, nothing painted but the numbers
_NUMBERS_CSS = ("@page { background: none !important; "
                + " ".join(f"@{box} {{ content: none !important; }}" for box in MARGIN_BOXES if box != NUMBERED_BOX)
                + " } html, body { background: none !important; } .xai-audit-page { break-after: page; }")

#: True in a process that may fork a helper (the command's PDF worker: one thread, WeasyPrint imported)
_may_fork = False


def allow_fork() -> None:
    """Let this process fork its helpers (call it only in a process with one thread)."""
    global _may_fork
    _may_fork = True


# -- the cut ---------------------------------------------------------------------


def cut(html: str) -> list[str]:
    """``html`` (a print page of the built-in report template) as the pages to lay out one by one: cut before
    the body, before the appendix and before each of its sections but the first; or as itself alone where it
    is short, has no appendix, or the cut is switched off (:data:`ENV`)."""
    if len(html) < MIN_CHARACTERS or os.environ.get(ENV, "1") == "0":
        return [html]
    head_end, main, appendix = html.find("</head>"), html.find(_MAIN), html.find(_APPENDIX)
    if html.count(_APPENDIX) != 1 or _TITLE.search(html) is None or not 0 <= head_end < main < appendix:
        return [html]
    body = html.find(_BODY, main, appendix)
    places = ([body] if body > 0 else []) + _page_breaks(html, appendix)
    return _linked_across(_parts(html, _joined(places, len(html))))


def _joined(places: list[int], end: int) -> list[int]:
    """``places`` less those that would leave a part after the first shorter than :data:`MIN_PART` characters: a
    short part is joined to the one after it (the last to the one before), for a part's fixed cost (its
    stylesheet, its fonts: about 0.2 s) is most of a short part's."""
    kept = list(places)
    while True:
        bounds = [*kept, end]
        short = [k for k in range(len(kept)) if bounds[k + 1] - bounds[k] < MIN_PART]
        if not short or len(kept) == 1:
            return kept
        k = short[0]
        del kept[k + 1 if k + 1 < len(kept) else k]


def _page_breaks(html: str, appendix: int) -> list[int]:
    """Where the stylesheet starts a new page in the appendix: the appendix itself, and each of its sections (a
    ``<section class="section ...">`` that is a child of the appendix) after its first, which shares the
    appendix's first page. Each is a page of the appendix (a named page, whose running head is not the first
    page's)."""
    places, depth = [appendix], 0
    for tag in _BLOCK_TAG.finditer(html, appendix):
        if tag.group(1):
            depth -= 1
            if depth == 0:
                break  # the appendix ends
            continue
        if depth == 1 and tag.group(2) == "section" and re.match(r'<section class="section[ "]', tag.group()):
            places.append(tag.start())
        depth += 1
    return places[:1] + places[2:]


def _parts(html: str, places: list[int]) -> list[str]:
    """``html`` cut at ``places`` (the body, where the stylesheet starts it on a page of its own; the appendix and
    its sections: :func:`_page_breaks`): each part a whole page, with the head (stylesheet and all; a part
    after the first without the page's metadata), the boxes the cut crosses (the report; the appendix, where a
    cut is inside it) opened before it and closed after it, and the report's title, unseen, at its start for
    the running head."""
    head_end, main, appendix = html.find("</head>"), html.find(_MAIN), html.find(_APPENDIX)
    title = _TITLE.search(html)
    assert title is not None
    unseen = title.group().replace('class="report-title"',
                                   'class="report-title" style="position: absolute; visibility: hidden"', 1)
    head = (f"{_METADATA.sub('', html[:head_end])}<style>{_PART_CSS} {_NOT_FIRST_CSS}</style>"
            f"{html[head_end:main]}")
    bounds = [0, *places, len(html)]
    parts = []
    for start, end in zip(bounds, bounds[1:]):
        crossed_before = [] if start == 0 else ["main"] + (["appendix"] if start > appendix else [])
        crossed_after = [] if end == len(html) else ["main"] + (["appendix"] if end > appendix else [])
        if start == 0:
            text = f"{html[:head_end]}<style>{_PART_CSS}</style>{html[head_end:end]}"
            for box in crossed_after:  # the boxes opened in this part go on into the next
                tag = _MAIN if box == "main" else _APPENDIX
                text = text.replace(tag, tag.replace(">", f" {_CONTINUES}>", 1), 1)
        else:
            opened = ""
            for box in crossed_before:
                marks = _CONTINUED + (f" {_CONTINUES}" if box in crossed_after else "")
                opened += (f'<main class="report" {marks}>\n{unseen}\n' if box == "main"
                           else f'<div class="appendix" {marks}>\n')
            text = head + opened + html[start:end]
            if "appendix" in crossed_after and "appendix" not in crossed_before:  # the appendix starts in this part
                text = text.replace(_APPENDIX, _APPENDIX.replace(">", f" {_CONTINUES}>", 1), 1)
        closing = {"main": "</main>", "appendix": "</div>"}
        text += "".join(f"\n{closing[box]}" for box in reversed(crossed_after))
        parts.append(text if end == len(html) else f"{text}\n</body>\n</html>\n")
    return parts


def _linked_across(parts: list[str]) -> list[str]:
    """Each part's links to an anchor in another part given the :data:`ACROSS` scheme."""
    ids = [{unquote(html_text.unescape(name)) for name in _ID.findall(part)} for part in parts]
    everywhere = set().union(*ids)

    def relink(part: str, own: set[str]) -> str:
        def one(link: re.Match) -> str:
            target = unquote(html_text.unescape(link.group(1)))
            return link.group() if target in own or target not in everywhere else f'href="{ACROSS}:{link.group(1)}"'

        return _HREF.sub(one, part)

    return [relink(part, own) for part, own in zip(parts, ids)]


# -- laying out ------------------------------------------------------------------

#: one page's bookmarks ((level, label, (x, y), state), as WeasyPrint's Page has them) and its height (CSS px)
Marks = list[tuple[list[tuple[int, str, tuple[float, float], str]], float]]
#: what a part is laid out from: its page, its attachments (the first part's), their date, the outline's
#: labels, the figures its page refers to
PartJob = tuple[str, Mapping[str, bytes] | None, datetime, Mapping[str, str], Mapping[str, tuple[bytes, str]]]


def parts_pdf(jobs: Sequence[PartJob], laid_out: Callable[[int], None] | None = None) -> list[tuple[bytes, Marks]]:
    """Each part's PDF/A-3b, with no outline, and its pages' bookmarks and heights (for the outline of all);
    ``laid_out`` is told their page count once every part is laid out, before they are drawn."""
    from xai_audit.report.pdfdoc import PDF_VARIANT, attachments, data_only_url_fetcher
    from xai_audit.report.pdfdoc import laid_out as lay_out

    fetchers = [data_only_url_fetcher(figures) for *_, figures in jobs]
    documents = [lay_out(page, labels, fetcher) for (page, _, _, labels, _), fetcher in zip(jobs, fetchers)]
    if laid_out is not None:
        laid_out(sum(len(document.pages) for document in documents))
    made = []
    for (_, files, when, _, _), fetcher, document in zip(jobs, fetchers, documents):
        marks: Marks = []
        for page in document.pages:
            marks.append((list(page.bookmarks), page.height))
            page.bookmarks = []  # the outline is written once, for every part (merge)
        made.append((document.write_pdf(pdf_variant=PDF_VARIANT,
                                        attachments=attachments(files, when, fetcher)), marks))
    return made


def numbers_pdf(html: str, count: int, laid_out: Callable[[int], None] | None = None) -> bytes:
    """The page numbers of a ``count``-page PDF of ``html`` (the print page): ``count`` pages with the page's
    own stylesheet that show nothing but :data:`NUMBERED_BOX`."""
    from weasyprint import HTML

    from xai_audit.report.pdfdoc import PDF_VARIANT, data_only_url_fetcher

    pages = '<div class="xai-audit-page"></div>' * (count - 1) + "<div></div>"
    page = f"{_numbers_head(html)}<style>{_NUMBERS_CSS}</style></head><body>{pages}</body></html>"
    document = HTML(string=page, url_fetcher=data_only_url_fetcher()).render(pdf_variant=PDF_VARIANT)
    if len(document.pages) != count:
        raise RuntimeError(f"the page numbers took {len(document.pages)} pages, not {count}")
    if laid_out is not None:
        laid_out(count)
    return document.write_pdf(pdf_variant=PDF_VARIANT)


def _numbers_head(html: str) -> str:
    """The print page's head, up to ``</head>``, without its metadata: what the page numbers are laid out with."""
    return _METADATA.sub("", html[:html.index("</head>")])


def pdf_in_parts(html: str, attachments: Mapping[str, bytes] | None, when: datetime, labels: Mapping[str, str],
                 figures: Mapping[str, tuple[bytes, str]], cache: Path | None = None) -> bytes | None:
    """The PDF of ``html`` laid out in parts (:func:`cut`), or None where it is one part or this process may not
    fork its helpers (:func:`allow_fork`; the caller lays it out whole).

    A part after the first is taken from ``cache`` (a run's cache folder: :class:`PartStore`) where it is
    there. The others are shared between this process (the first part, and others) and one helper process
    forked from it, by length; the helper says its page count as soon as it has laid its parts out, and the
    page numbers are then laid out in one more process while the parts are drawn. What is laid out is kept in
    ``cache``. A helper that failed leaves its work to this process, which does it or raises what it
    raises."""
    if not _may_fork:  # one process: the parts' fixed costs, page numbers and merge would buy no time
        return None
    pieces = cut(html)
    if len(pieces) == 1:
        return None
    store = PartStore(cache) if cache is not None else None
    keys = [""] + [part_key(piece, labels) for piece in pieces[1:]]
    made: list[tuple[bytes, Marks] | None] = [None] + [store.get(key) if store else None for key in keys[1:]]
    jobs: dict[int, PartJob] = {
        i: (piece, attachments if i == 0 else None, when, labels,
            {url: figures[url] for url in figures if url in piece})
        for i, piece in enumerate(pieces) if made[i] is None}
    ours, theirs = _shared({i: len(pieces[i]) for i in jobs})
    helper = _Helper(parts_pdf, ([jobs[i] for i in theirs],)) if theirs else None
    known = sum(len(found[1]) for found in made if found is not None)
    numbers: list[bytes] = []  # the page numbers, once every count is known: from the cache, or a helper's
    numbering: list[_Helper] = []

    def ours_laid_out(count: int) -> None:
        others = helper.count() if helper is not None else 0
        if others is None:  # the helper failed: its parts are laid out here, and counted after
            return
        stored = store.get(_numbers_key(html, known + count + others)) if store else None
        if stored is not None:
            numbers.append(stored[0])
        else:
            numbering.append(_Helper(numbers_pdf, (html, known + count + others)))

    try:
        for i, done in zip(ours, parts_pdf([jobs[i] for i in ours], laid_out=ours_laid_out)):
            made[i] = done
        if theirs:
            there = helper.result() if helper is not None else None
            for i, done in zip(theirs, there or parts_pdf([jobs[i] for i in theirs])):  # a helper that failed
                made[i] = done
        numbered = numbering[0].result() if numbering else None  # (none where the cache had them)
    finally:  # an error here (WeasyPrint's, an interrupt) leaves no helper behind
        for process in [helper, *numbering]:
            if process is not None:
                process.close()
    marks = [page for found in made for page in found[1]]  # type: ignore[index]
    if not numbers:
        numbers.append(numbered if numbered is not None else numbers_pdf(html, len(marks)))
        if store is not None:
            store.put(_numbers_key(html, len(marks)), numbers[0], [])
    if store is not None:
        for i in jobs:
            if i > 0:
                store.put(keys[i], *made[i])  # type: ignore[misc]
    return merge([found[0] for found in made], numbers[0], marks)  # type: ignore[index]


def _numbers_key(html: str, count: int) -> str:
    return part_key(_numbers_head(html), {"page numbers": str(count)})


def _shared(sizes: Mapping[int, int]) -> tuple[list[int], list[int]]:
    """The parts to lay out, shared between this process (the first part's, and others) and a helper: the
    longest first, each to the process with less to do so far (in page-characters)."""
    ours, theirs, load = [], [], [0, 0]
    for i in sorted(sizes, key=lambda i: (i != 0, -sizes[i])):
        side = 0 if i == 0 or load[0] <= load[1] else 1
        (ours if side == 0 else theirs).append(i)
        load[side] += sizes[i]
    return sorted(ours), sorted(theirs)


# -- the cache -------------------------------------------------------------------


def part_key(page: str, labels: Mapping[str, str]) -> str:
    """What a part's PDF is a function of: its page (the figures it shows are named by their SHA-256 there), the
    outline's labels, and the software that lays it out."""
    import pydyf
    import weasyprint

    from xai_audit.report.pdfdoc import PDF_VARIANT

    digest = hashlib.sha256()
    for value in (str(PART_FORMAT), weasyprint.__version__, pydyf.__version__, PDF_VARIANT,
                  json.dumps(dict(labels), sort_keys=True), page):
        digest.update(value.encode("utf-8", "surrogatepass") + b"\x00")
    return digest.hexdigest()


class PartStore:
    """Parts' PDFs (and their pages' bookmarks) on disk under ``root/figures/pdf``, kept by :func:`part_key`.

    An entry is the PDF, its bookmarks as JSON, the PDF's length (8 bytes) and the SHA-256 of the key, the PDF
    and the JSON; one that does not check out is laid out again. Written under a temporary name and renamed
    when whole; a store that cannot be written costs the next run a layout, never this report its PDF."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "figures" / "pdf"

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.part"

    def get(self, key: str) -> tuple[bytes, Marks] | None:
        try:
            stored = self._path(key).read_bytes()
            body, checksum = stored[:-32], stored[-32:]
            length = int.from_bytes(body[-8:], "big")
            pdf, marks = body[:length], body[length:-8]
            if not pdf.startswith(b"%PDF-") or hashlib.sha256(key.encode() + pdf + marks).digest() != checksum:
                return None
            pages = json.loads(marks)
            return pdf, [([(level, label, (x, y), state) for level, label, (x, y), state in marked], height)
                         for marked, height in pages]
        except (OSError, ValueError, TypeError):
            return None

    def put(self, key: str, pdf: bytes, marks: Marks) -> None:
        from xai_audit.report.figcache import store_entry

        data = json.dumps(marks, ensure_ascii=False).encode("utf-8", "surrogatepass")
        checksum = hashlib.sha256(key.encode() + pdf + data).digest()
        store_entry(self._path(key), pdf + data + len(pdf).to_bytes(8, "big") + checksum)


# -- one PDF ---------------------------------------------------------------------


def bookmark_tree(marks: Marks, scale: float = 0.75) -> list[tuple[str, tuple[int, float, float], list, str]]:
    """The outline of pages with these bookmarks: ``(label, (page, x, y), children, state)`` subtrees, as
    WeasyPrint's ``Document.make_bookmark_tree(scale, transform_pages=True)`` makes them (a depth per level
    met, a skipped level skipped; points in PDF units, from the page's bottom left)."""
    root: list = []
    skipped: list[int] = []
    last_by_depth = [root]
    previous = 0
    for number, (bookmarks, height) in enumerate(marks):
        for level, label, (x, y), state in bookmarks:
            if level > previous:
                skipped.append(level - previous - 1)
            else:
                level_now = level
                while level_now < previous:
                    level_now += 1 + skipped.pop()
                if level_now > previous:
                    skipped.append(level_now - previous - 1)
            previous = level
            depth = level - sum(skipped)
            children: list = []
            last_by_depth[depth - 1].append((label, (number, x * scale, (height - y) * scale), children, state))
            del last_by_depth[depth:]
            last_by_depth.append(children)
    return root


def merge(parts: Sequence[bytes], numbers: bytes, marks: Marks) -> bytes:
    """One PDF: the first part (its document: metadata, attachments, output intent) with the other parts' pages
    after its own, every part's named destinations, links across a cut made internal, the outline of ``marks``
    (every part's pages in order), and ``numbers``' pages drawn over the pages."""
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import ArrayObject, DictionaryObject, Fit, NameObject, TextStringObject

    numbered = PdfReader(io.BytesIO(numbers)).pages
    if len(numbered) != len(marks):
        raise ValueError(f"{len(numbered)} pages of page numbers for {len(marks)} pages")
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(parts[0])))
    # named destinations: the first part's are on the writer's pages already; the others' are moved onto them
    dests = dict(_named_destinations(writer.root_object))
    for part in parts[1:]:
        extra = PdfReader(io.BytesIO(part))
        theirs = {page.indirect_reference.idnum: len(writer.pages) + i for i, page in enumerate(extra.pages)}
        for page in extra.pages:
            writer.add_page(page)
        for name, dest in _named_destinations(extra.trailer["/Root"]):
            dests.setdefault(name, ArrayObject([writer.pages[theirs[dest[0].idnum]].indirect_reference, *dest[1:]]))
    if dests:
        names = writer.root_object.setdefault(NameObject("/Names"), DictionaryObject()).get_object()
        flat = ArrayObject()
        for name in sorted(dests):
            flat.extend([TextStringObject(name), dests[name]])
        names[NameObject("/Dests")] = DictionaryObject({NameObject("/Names"): flat})
    for page in writer.pages:  # links across the cut: internal again
        for annotation in page.get("/Annots", []):
            annotation = annotation.get_object()
            action = annotation.get("/A")
            uri = action.get_object().get("/URI") if action is not None else None
            if isinstance(uri, str) and uri.startswith(f"{ACROSS}:"):
                del annotation["/A"]
                annotation[NameObject("/Dest")] = TextStringObject(unquote(uri[len(ACROSS) + 1:]))

    def outline(subtrees: Sequence, parent: Any = None) -> None:
        for label, (number, x, y), children, state in subtrees:
            item = writer.add_outline_item(title=label, page_number=number, parent=parent, fit=Fit.xyz(x, y, 0),
                                           is_open=state != "closed")
            outline(children, item)

    outline(bookmark_tree(marks))
    for page, number in zip(writer.pages, numbered):
        page.merge_page(number)
        page.compress_content_streams()
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _named_destinations(catalog: Any) -> list[tuple[str, Any]]:
    """(name, destination array) of a catalog's /Dests name tree, in the tree's order."""
    found: list[tuple[str, Any]] = []

    def walk(node: Any) -> None:
        node = node.get_object()
        for kid in node.get("/Kids", []):
            walk(kid)
        flat = node.get("/Names", [])
        for at in range(0, len(flat) - 1, 2):
            found.append((str(flat[at]), flat[at + 1].get_object()))

    names = catalog.get_object().get("/Names")
    if names is not None and "/Dests" in names.get_object():
        walk(names.get_object()["/Dests"])
    return found


# -- helper processes ------------------------------------------------------------


class _Helper:
    """``function(*arguments, laid_out=...)`` in a process forked from this one (which must have one thread:
    :func:`allow_fork`). It says its page count once laid out (:meth:`count`), then its value (:meth:`result`);
    either is None where it failed."""

    def __init__(self, function: Callable[..., Any], arguments: tuple) -> None:
        self._pid: int | None = None
        self._stream: Any = None
        self._told: list[tuple[str, Any]] = []
        try:
            self._fork(function, arguments)
        except (OSError, ValueError):  # no more processes: the caller does it itself
            self._stream = None

    def _fork(self, function: Callable[..., Any], arguments: tuple) -> None:
        theirs, ours = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the forked child; what it says is checked in the parent
            os.close(theirs)
            _answer(os.fdopen(ours, "wb"), function, arguments)
        os.close(ours)
        self._pid, self._stream = pid, os.fdopen(theirs, "rb")

    def _next(self) -> tuple[str, Any]:
        if self._stream is None:
            return ("died", None)
        try:
            return pickle.load(self._stream)
        except Exception:  # noqa: BLE001 - it died before answering (killed, out of memory)
            return ("died", None)

    def count(self) -> int | None:
        """The page count it laid out (waits for it), or None where it failed first."""
        if not self._told:
            self._told.append(self._next())
        kind, value = self._told[0]
        return value if kind == "count" else None

    def result(self) -> Any:
        """Its value (waits for it), or None where it failed; the process is ended."""
        told = next((message for message in self._told if message[0] != "count"), None)
        while told is None:  # its count, where not asked for, comes first
            message = self._next()
            told = message if message[0] != "count" else None
        self._told.clear()
        self._end(kill=False)
        kind, value = told
        return value if kind == "ok" else None

    def close(self) -> None:
        """End it where it is still at work (this process stopped waiting for it: an error, an interrupt)."""
        self._end(kill=True)

    def _end(self, kill: bool) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._pid is not None:
            if kill:
                try:
                    os.kill(self._pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.waitpid(self._pid, 0)
            self._pid = None


def _answer(out: Any, function: Callable[..., Any], arguments: tuple) -> None:
    """Run ``function(*arguments)``; write ``("count", pages)`` once laid out, then ``("ok", value)`` or
    ``("error", message)``, each a pickle, to ``out``; end the process."""
    def tell(message: tuple[str, Any]) -> None:
        pickle.dump(message, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    try:
        try:
            reply: tuple[str, Any] = ("ok", function(*arguments, laid_out=lambda pages: tell(("count", pages))))
        except BaseException as exc:  # noqa: BLE001 - the parent does the work itself, and raises there
            reply = ("error", f"{type(exc).__name__}: {exc}")
        tell(reply)
        out.close()
    finally:
        os._exit(0)  # no teardown: WeasyPrint's objects die with the process
