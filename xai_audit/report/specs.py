"""Figures that plugins describe as data, drawn here. The kinds and their fields are the contract's
(:data:`xai_audit.contract.figures.FIGURE_KINDS`, documented in docs/plugins.md); one renderer a kind."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
from matplotlib.colors import TwoSlopeNorm

from xai_audit.report import figures as f
from xai_audit.report.figcache import cached
from xai_audit.report.heatmaps import heatmap_tiles


def resolve(value: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(value, Mapping) and set(value) == {"array"}:
        return arrays[value["array"]]
    if isinstance(value, list):
        return [resolve(v, arrays) for v in value]
    if isinstance(value, Mapping):
        return {k: resolve(v, arrays) for k, v in value.items()}
    return value


def render_spec(spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """A template figure ``{src, alt, caption, samples}`` from a spec."""
    spec = resolve(dict(spec), arrays)
    kind = spec.get("kind")
    if kind not in RENDERERS:
        raise ValueError(f"unknown figure kind {kind!r}; known: {sorted(RENDERERS)}")
    src = _draw(spec)
    title = str(spec.get("title", ""))
    return {
        "src": src,
        "alt": str(spec.get("alt") or title or kind),
        "caption": str(spec.get("caption") or title),
        "samples": [],
    }


@cached
def _draw(spec: Mapping[str, Any]) -> str:
    """The spec's figure as a data URI, kept by content while a figure store is open (report/figcache.py)."""
    with f._style():
        return RENDERERS[spec["kind"]](spec)


def _axes(spec: Mapping[str, Any], width: float = 6.0, height: float = 3.0):
    fig = f._figure(float(spec.get("width", width)), float(spec.get("height", height)))
    ax = fig.add_subplot(1, 1, 1)
    if spec.get("title"):
        ax.set_title(f._plain(spec["title"], 80))
    ax.set_xlabel(f._plain(spec.get("xlabel", ""), 60))
    ax.set_ylabel(f._plain(spec.get("ylabel", ""), 60))
    return fig, ax


def _lines(spec: Mapping[str, Any]) -> str:
    fig, ax = _axes(spec)
    x = np.asarray(spec.get("x"), dtype=float) if spec.get("x") is not None else None
    for series in spec.get("series", []):
        y = np.asarray([np.nan if v is None else v for v in series["y"]], dtype=float)
        xs = x if x is not None else np.arange(len(y))
        (line,) = ax.plot(xs, y, label=f._plain(series.get("label", ""), 40), lw=1.4,
                          ls="--" if series.get("style") == "dashed" else "-", color=series.get("color"),
                          marker=series.get("marker"), ms=3)
        if series.get("low") is not None and series.get("high") is not None:
            low = np.asarray([np.nan if v is None else v for v in series["low"]], dtype=float)
            high = np.asarray([np.nan if v is None else v for v in series["high"]], dtype=float)
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.15, lw=0)
    if any(s.get("label") for s in spec.get("series", [])):
        ax.legend(frameon=False, fontsize=7)
    return f._encode(fig)


def _bars(spec: Mapping[str, Any]) -> str:
    fig, ax = _axes(spec)
    labels = [f._plain(l, 18) for l in spec.get("labels", [])]
    series = spec.get("series", [])
    width = 0.8 / max(1, len(series))
    xs = np.arange(len(labels))
    for k, s in enumerate(series):
        values = np.asarray(s["values"], dtype=float)
        err = None
        if s.get("low") is not None and s.get("high") is not None:
            err = np.vstack([values - np.asarray(s["low"], float), np.asarray(s["high"], float) - values])
        ax.bar(xs + (k - (len(series) - 1) / 2) * width, values, width, yerr=err, capsize=2,
               label=f._plain(s.get("label", ""), 30))
    ax.set_xticks(xs, labels, rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
    if len(series) > 1:
        ax.legend(frameon=False, fontsize=7)
    return f._encode(fig)


def _matrix(spec: Mapping[str, Any]) -> str:
    values = np.asarray(spec["values"], dtype=float)
    fig, ax = _axes(spec, width=1.2 + 0.5 * values.shape[1], height=1.0 + 0.42 * values.shape[0])
    if spec.get("signed"):
        bound = float(np.nanmax(np.abs(values))) or 1.0
        image = ax.imshow(values, cmap="RdBu_r", norm=TwoSlopeNorm(0, -bound, bound))
    else:
        image = ax.imshow(values, cmap="Blues")
    ax.set_xticks(range(values.shape[1]), [f._plain(c, 14) for c in spec.get("cols", range(values.shape[1]))],
                  rotation=45, ha="right")
    ax.set_yticks(range(values.shape[0]), [f._plain(r, 14) for r in spec.get("rows", range(values.shape[0]))])
    ax.set_xlabel(f._plain(spec.get("col_label", ""), 40))
    ax.set_ylabel(f._plain(spec.get("row_label", ""), 40))
    fmt = spec.get("format", "{:.2f}")
    if values.size <= 150:
        for (i, j), v in np.ndenumerate(values):
            dark = image.norm(v) > 0.6 if not spec.get("signed") else abs(image.norm(v) - 0.5) > 0.35
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=6.5, color="white" if dark else "black")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return f._encode(fig)


def _images(spec: Mapping[str, Any]) -> str:
    """Images in a grid with a title under each: one composed picture (figures.tile_grid)."""
    images = [np.asarray(im, dtype=np.float32) for im in spec["images"]]
    titles = list(spec.get("titles") or [""] * len(images))
    columns = max(1, int(spec.get("columns", min(8, max(1, len(images))))))
    cell = 0.95
    size = f.tile_pixels(cell, f.GRID_DPI)
    cells: list[list[f.Tile]] = []
    for k, image in enumerate(images):
        if k % columns == 0:
            cells.append([])
        cells[-1].append(f.Tile(f.image_tile(image, size), str(titles[k]) if k < len(titles) and titles[k] else ""))
    lines = max((str(t).count("\n") + 1 for t in titles if t), default=0)
    return f.tile_grid(cells, cell=cell, title=str(spec.get("title") or ""), under_lines=lines, under_fontsize=6.5)


def _scatter(spec: Mapping[str, Any]) -> str:
    fig, ax = _axes(spec, width=4.6, height=3.6)
    x = np.asarray(spec["x"], dtype=float)
    y = np.asarray(spec["y"], dtype=float)
    groups = spec.get("groups")
    if groups is None:
        ax.scatter(x, y, s=10, alpha=0.7)
    else:
        groups = np.asarray([str(g) for g in groups])
        for g in sorted(set(groups.tolist())):
            mask = groups == g
            ax.scatter(x[mask], y[mask], s=10, alpha=0.7, label=f._plain(g, 20))
        ax.legend(frameon=False, fontsize=7, markerscale=1.5)
    if spec.get("diagonal") and len(x):
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], color="#9aa5b1", lw=0.8, ls="--")
    return f._encode(fig)


def _graph(spec: Mapping[str, Any]) -> str:
    fig, ax = _axes(spec, width=5.0, height=4.0)
    nodes = spec.get("nodes", [])
    for i, j in spec.get("edges", []):
        ax.plot([nodes[i]["x"], nodes[j]["x"]], [nodes[i]["y"], nodes[j]["y"]], color="#9aa5b1", lw=0.7, zorder=1)
    if nodes and all("group" in n for n in nodes):
        groups = [str(n["group"]) for n in nodes]
        colours = f.class_colors(sorted(set(groups)))
        for g in sorted(set(groups)):
            chosen = [n for n, name in zip(nodes, groups) if name == g]
            ax.scatter([n["x"] for n in chosen], [n["y"] for n in chosen], s=[20 + 8 * float(n.get("size", 1)) for n in chosen],
                       color=colours[g], zorder=2, edgecolors="white", linewidths=0.5, label=f._plain(g, 20))
        ax.legend(frameon=False, fontsize=7, markerscale=0.8, loc="center left", bbox_to_anchor=(1.0, 0.5),
                  title=f._plain(spec.get("color_label", ""), 40) or None, title_fontsize=7)
    elif nodes:
        points = ax.scatter(
            [n["x"] for n in nodes], [n["y"] for n in nodes],
            s=[20 + 8 * float(n.get("size", 1)) for n in nodes],
            c=[float(n.get("color", 0)) for n in nodes], cmap="viridis", zorder=2, edgecolors="white", linewidths=0.5,
        )
        fig.colorbar(points, ax=ax, shrink=0.8, label=f._plain(spec.get("color_label", ""), 40))
    for n in nodes:
        if n.get("label"):
            ax.annotate(f._plain(n["label"], 12), (n["x"], n["y"]), fontsize=6, zorder=3, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_axis_off()
    return f._encode(fig)


def _diagram(spec: Mapping[str, Any]) -> str:
    fig, ax = _axes(spec, width=4.6, height=4.0)
    dims = spec.get("dims", [])
    finite = [float(v) for d in dims for v in list(d.get("birth", [])) + list(d.get("death", []))
              if v is not None and np.isfinite(float(v))]
    top = 1.08 * max(finite) if finite else 1.0
    lo = min(0.0, min(finite)) if finite else 0.0
    ax.plot([lo, top], [lo, top], color="#9aa5b1", lw=0.8)
    ax.axhline(top, color="#9aa5b1", lw=0.6, ls=":")
    ax.text(lo, top, " never dies", fontsize=6, va="bottom", color="#52606d")
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for d in dims:
        k = int(d.get("dim", 0))
        colour = colours[k % len(colours)]
        birth = np.asarray(d.get("birth", []), dtype=float)
        death = np.asarray([np.inf if v is None else v for v in d.get("death", [])], dtype=float)
        death = np.where(np.isfinite(death), death, top)
        ax.scatter(birth, death, s=10, color=colour, alpha=0.75, label=f"H{k}", zorder=2)
        flags = np.asarray(d.get("significant") or [False] * len(birth), dtype=bool)
        if flags.any():
            ax.scatter(birth[flags], death[flags], s=70, facecolors="none", edgecolors="black", lw=1.0, zorder=3)
        if d.get("ratio") is not None:
            ax.plot([lo, top / float(d["ratio"])], [lo * float(d["ratio"]), top], color=colour, lw=0.8, ls="--")
        if d.get("level") is not None:
            ax.axhline(float(d["level"]), color=colour, lw=0.8, ls="--")
    ax.set_xlim(lo, top * 1.02)
    ax.set_ylim(lo, top * 1.06)
    if dims:
        ax.legend(frameon=False, fontsize=7, loc="lower right")
    return f._encode(fig)


RENDERERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "lines": _lines,
    "bars": _bars,
    "matrix": _matrix,
    "images": _images,
    "scatter": _scatter,
    "graph": _graph,
    "diagram": _diagram,
    "heatmaps": heatmap_tiles,
}
