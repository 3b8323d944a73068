"""Figures that plugins describe as data; the report draws them (``xai_audit.report.specs``).

A plugin never renders: it returns figure *specs*, plain dicts in
``Explanation.figures`` or ``HypothesisResult.figures``. Each spec has a
``kind`` and a ``title``, ``caption`` and ``alt`` text; any value may be an
array reference ``{"array": "name"}`` into the step's ``arrays`` (see
:func:`array_ref`). :data:`FIGURE_KINDS` lists every kind with the fields it
needs and the fields it may have; :func:`check_figure` checks a spec against it.
"""

from __future__ import annotations

from typing import Any, Mapping

#: kind -> (required fields, optional fields, what it draws)
FIGURE_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "lines": (("x", "series"), ("xlabel", "ylabel"),
              "line plot; series = [{label, y, optional style ('dashed'), color, marker ('o'), low/high (a band: "
              "interval ends per x)}]; a y of None leaves a gap"),
    "bars": (("labels", "series"), ("ylabel",),
             "grouped bars; series = [{label, values, optional low/high (interval ends)}]"),
    "matrix": (("values",), ("rows", "cols", "row_label", "col_label", "signed", "format"),
               "a 2-D table of numbers drawn as colours"),
    "images": (("images",), ("titles", "columns"), "a grid of images (N, 3, H, W) or (N, H, W) in [0, 1]"),
    "scatter": (("x", "y"), ("groups", "xlabel", "ylabel", "diagonal"),
                "points; groups = one label per point; diagonal draws y = x"),
    "graph": (("nodes", "edges"), ("color_label",),
              "nodes = [{x, y, size, color or group, optional label}], edges = [[i, j]] (e.g. a Mapper graph)"),
    "diagram": (("dims",), ("xlabel", "ylabel"),
                "a persistence diagram; dims = [{dim, birth, death (inf or None: never dies), optional "
                "significant (a flag per point), ratio (line death = ratio x birth) or level (line death = level)}]"),
    "heatmaps": (("maps",), ("image", "images", "titles", "columns", "signed", "colorbar", "normalise"),
                 "maps (K, h, w) as overlays with one colour bar, over image (3, H, W) or images (K, 3, H, W); "
                 "normalise 'shared' (one scale) or 'each'"),
}
#: fields every kind may have (``width``/``height``: the figure's size in inches; ``format``, on a matrix: how
#: each number is written, a Python format string such as ``"{:.2f}"``; ``key``: true shows a hypothesis's
#: figure in its section of the report's body, in place of the host's before/after chart, rather than in the
#: appendix with the rest)
COMMON_FIELDS = ("kind", "title", "caption", "alt", "width", "height", "key")


def array_ref(name: str) -> dict[str, str]:
    """A reference to ``arrays[name]`` of the same explanation or result, for a figure field."""
    return {"array": name}


def check_figure(spec: Mapping[str, Any], arrays: Mapping[str, Any] | None = None) -> None:
    """Raise ValueError naming what is wrong with a figure spec (unknown kind or field, missing field or array)."""
    kind = spec.get("kind")
    if kind not in FIGURE_KINDS:
        raise ValueError(f"unknown figure kind {kind!r}; known: {', '.join(sorted(FIGURE_KINDS))}")
    required, optional, _ = FIGURE_KINDS[kind]
    missing = [f for f in required if f not in spec]
    if missing:
        raise ValueError(f"a {kind!r} figure needs {', '.join(missing)}")
    unknown = sorted(set(spec) - set(required) - set(optional) - set(COMMON_FIELDS))
    if unknown:
        raise ValueError(f"a {kind!r} figure has no field {unknown[0]!r}; its fields: "
                         f"{', '.join(required + optional + COMMON_FIELDS)}")
    if arrays is not None:
        for name in _array_names(spec):
            if name not in arrays:
                raise ValueError(f"the {kind!r} figure refers to array {name!r}, which the step did not return")


def _array_names(value: Any) -> list[str]:
    if isinstance(value, Mapping) and set(value) == {"array"}:
        return [str(value["array"])]
    if isinstance(value, Mapping):
        return [n for v in value.values() for n in _array_names(v)]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _array_names(v)]
    return []
