"""How long a string the report shows: the one bound every template value passes through.

Strings in the report come from models, data sets, plugins and plans, and any of them may be huge (a
megabyte title, class names of a hundred kilobytes). WeasyPrint lays out one unbreakable line of such text
for minutes, and nobody reads it anyway. :func:`for_display` walks the template data once, in
:func:`xai_audit.report.render.render_html`, so every page (the report, the comparison, a user's own
templates) shows at most :data:`DISPLAY_LIMIT` characters of any one string, cut with a visible ellipsis
that says how long the whole is. ``results.json`` is written from the results, not from this data, and
keeps every string whole.

Two kinds of string are not cut: a figure's data URI (:class:`DataURI`, made only by the figure code) and a
:class:`LongText` block that was bounded when it was made (the plan as YAML, built from strings cut to
:data:`PLAN_STRING_LIMIT` and at most :data:`LONG_TEXT_LIMIT` characters in all).
"""

from __future__ import annotations

import re
from typing import Any

from markupsafe import Markup

#: characters of one string the report shows; longer ones are cut with an ellipsis and their length. The
#: longest sentence the report writes itself is about 500 characters.
DISPLAY_LIMIT = 600
#: characters of one unbroken run (no white space) the report shows: a name, an id, a label, a path. Runs
#: longer than this are data, never the report's own words, and they cost most: WeasyPrint's work on a table
#: cell grows with the square of its length (every character may end a line), so seven class names of 600
#: characters take seconds to lay out and of 1,000 a minute.
RUN_LIMIT = 200
#: characters of the report's title (it also runs along the top of every PDF page)
TITLE_LIMIT = 200
#: characters of each string of the plan as the provenance section shows it
PLAN_STRING_LIMIT = 200
#: characters of a :class:`LongText` block (the plan as YAML)
LONG_TEXT_LIMIT = 20_000
#: characters of one unbroken run a table's column header shows: a longer name (a class name of 200
#: characters) is cut there, so it cannot widen its table past the page, and the table names it whole below
HEADER_RUN_LIMIT = 24


_LONG_RUN = re.compile(rf"\S{{{RUN_LIMIT + 1},}}")
#: characters of an unbroken run (a name, an id, a hash, a path) past which the printed page lets it break
#: anywhere (:func:`breakable_runs`); words and shorter names break only between words
BREAKABLE_RUN = 30
_BREAKABLE = re.compile(rf"[^\s<>]{{{BREAKABLE_RUN + 1},}}")
#: the print page in pieces: a style or title element (left as it is), another tag, or text between tags
_PIECES = re.compile(r"(<style\b.*?</style>|<title\b.*?</title>|<[^>]*>)|([^<]+)", re.S)
_LONG_HEADER_RUN = re.compile(rf"\S{{{HEADER_RUN_LIMIT + 1},}}")


class DataURI(str):
    """A figure as a ``data:image/png;base64,...`` URI: shown whole, never cut."""

    __slots__ = ()


class LongText(str):
    """A block of text bounded when it was made (see :func:`long_text`): not cut again."""

    __slots__ = ()


def clip(text: str, limit: int = DISPLAY_LIMIT) -> str:
    """``text`` whole when it is short; else cut, with an ellipsis where it was cut and its whole length.

    Each unbroken run over :data:`RUN_LIMIT` characters keeps its first ``RUN_LIMIT``; then the whole keeps
    its first ``limit`` characters.
    """
    if len(text) <= min(limit, RUN_LIMIT):
        return text
    shown = _LONG_RUN.sub(lambda m: m.group()[:RUN_LIMIT] + "…", text) if limit > RUN_LIMIT else text
    if len(shown) > limit:
        shown = shown[:limit] + "…"
    if shown == text:
        return text
    return f"{shown} [{len(text):,} characters in all; whole in results.json]"


def column_header(label: str) -> str | None:
    """``label`` cut short for a table's column header when it holds an unbroken run over
    :data:`HEADER_RUN_LIMIT` characters (each such run keeps its start and its end, an ellipsis between, so
    names that differ only at the end stay apart); ``None`` when it shows whole. A header wraps only between
    words, so one long name would set its column's width."""
    if not _LONG_HEADER_RUN.search(label):
        return None
    tail = HEADER_RUN_LIMIT // 3
    return _LONG_HEADER_RUN.sub(lambda m: m.group()[: HEADER_RUN_LIMIT - tail - 1] + "…" + m.group()[-tail:], label)


def long_text(text: str, limit: int = LONG_TEXT_LIMIT) -> LongText:
    """A multi-line block cut at the last whole line within ``limit`` characters, saying what was left out."""
    if len(text) <= limit:
        return LongText(text)
    head = text[:limit]
    head = head[: head.rfind("\n")] if "\n" in head else head
    rest = text.count("\n") - head.count("\n")
    return LongText(f"{head}\n… [{rest:,} more line(s); the whole is in results.json]")


def for_display(value: Any, limit: int = DISPLAY_LIMIT) -> Any:
    """``value`` (template data: mappings, lists, strings, numbers) with every string cut to ``limit``."""
    if isinstance(value, (DataURI, LongText, Markup)):  # Markup: trusted template text (the stylesheet)
        return value
    if isinstance(value, str):
        return clip(value, limit)
    if isinstance(value, dict):
        return {for_display(k, limit): for_display(v, limit) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(for_display(v, limit) for v in value)
    if isinstance(value, list):
        return [for_display(v, limit) for v in value]
    return value


def breakable_runs(html: str) -> str:
    """The print page with each unbroken run of text over :data:`BREAKABLE_RUN` characters in a
    ``<span class="run">``, which the stylesheet lets break anywhere.

    A table cell must otherwise allow a break at every character (``overflow-wrap: anywhere``) in case it
    holds such a name, and WeasyPrint then measures a cell's narrowest width one character at a time, laying
    the rest of its text out again for each: a tenth of the demo PDF's time went to a few cells of prose, and
    their words came out broken ("confirme d"). The page is autoescaped HTML (a ``<`` or ``>`` in text or in
    an attribute is an entity), so text between tags is text; style and title elements are left alone."""

    def piece(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return match.group(1)
        return _BREAKABLE.sub(lambda run: f'<span class="run">{run.group()}</span>', match.group(2))

    return _PIECES.sub(piece, html)


#: a printed table of at least this many columns is given column widths by its contents (:func:`column_widths`)
WIDTHS_FROM_COLUMNS = 6
#: characters of a cell's text that count toward its column's width: a longer text wraps in the column
WIDTH_TEXT_LIMIT = 28
#: characters of table text across a printed page (8.5 pt Liberation Sans, about 6 px a character, in 178 mm)
PRINTED_TABLE_CHARACTERS = 110
#: a printed cell's padding, in characters (14 px each side)
PRINTED_CELL_PADDING = 5


def column_widths(labels: list[str], rows: list[list[str]]) -> list[int] | None:
    """A printed table's column widths, in per cent of the table, from what its columns hold; None below
    :data:`WIDTHS_FROM_COLUMNS` columns.

    The PDF lays its appendix tables out at a fixed layout, which without widths gives every column an equal
    share, so in a wide table a column of long text broke its words ('descriptiv e') beside columns of short
    numbers with room to spare. Each column needs its longest word (a header's or a cell's) and wants its
    longest text, both counted up to :data:`WIDTH_TEXT_LIMIT` characters (a longer word breaks where it must,
    and a run past :data:`BREAKABLE_RUN` anywhere: :func:`breakable_runs`), plus the cell's padding: every
    column gets what it needs where the page has room, and what is left goes to the columns that want more,
    in proportion."""
    if len(labels) < WIDTHS_FROM_COLUMNS:
        return None
    needs, wants = [], []
    for j, label in enumerate(labels):
        texts = [str(row[j]) for row in rows if j < len(row)]
        word = min(max((len(w) for t in [str(label), *texts] for w in t.split()), default=1), WIDTH_TEXT_LIMIT)
        text = min(max((len(t) for t in texts), default=0), WIDTH_TEXT_LIMIT)
        needs.append(word + PRINTED_CELL_PADDING)
        wants.append(max(word, text) + PRINTED_CELL_PADDING)
    room = PRINTED_TABLE_CHARACTERS
    if sum(wants) <= room:  # room for every text on one line: the rest shared as the texts are long
        widths = [w * room / sum(wants) for w in wants]
    elif sum(needs) <= room:  # every word fits: what is left goes to the long texts
        more = [w - n for w, n in zip(wants, needs)]
        widths = [n + (room - sum(needs)) * m / sum(more) for n, m in zip(needs, more)]
    else:  # not even the words fit: each column as its words are long
        widths = [n * room / sum(needs) for n in needs]
    return [int(100 * w / room) for w in widths]
