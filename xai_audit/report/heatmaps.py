"""Heatmap figures: tiles of maps (the ``heatmaps`` spec kind) and the per-case grid of every explainer.

Overlays follow one rule everywhere: a signed map uses the diverging colour
map centred at 0 (red toward the class, blue against), an unsigned map the
red half of it; opacity grows with |value|, over a grey copy of the image;
one colour scale per figure, with its colour bar. Every grid is one composed picture
(:func:`xai_audit.report.figures.tile_grid`), not one matplotlib axes per tile.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.colors import Normalize

from xai_audit.report import figures as f
from xai_audit.report.figcache import cached


@cached
def heatmap_tiles(spec: Mapping[str, Any]) -> str:
    """The ``heatmaps`` spec kind: ``maps`` (K, h, w); optional ``image`` (3, H, W) under every
    map or ``images`` (K, 3, H, W), ``titles``, ``columns``, ``signed``, ``colorbar`` (label) and
    ``normalise`` ("shared", the default: one scale; "each": every map to its own 99th percentile).
    Drawn as one composed picture (:func:`~xai_audit.report.figures.tile_grid`)."""
    maps = [np.asarray(m, dtype=np.float32) for m in spec["maps"]]
    if not maps:
        raise ValueError("a heatmaps figure needs at least one map")
    signed = bool(spec.get("signed", True))
    each = spec.get("normalise", "shared") == "each"
    if each:
        maps = [m / f.robust_scale([m]) for m in maps]
    vmax = 1.0 if each else f.robust_scale(maps)
    backgrounds: list[np.ndarray | None]
    if spec.get("images") is not None:
        backgrounds = [np.asarray(im, dtype=np.float32) for im in spec["images"]]
    elif spec.get("image") is not None:
        backgrounds = [np.asarray(spec["image"], dtype=np.float32)] * len(maps)
    else:
        backgrounds = [None] * len(maps)
    titles = list(spec.get("titles") or [])
    columns = max(1, min(int(spec.get("columns", 8)), len(maps)))
    cell = 0.95 if columns <= 8 else 0.66
    size = f.tile_pixels(cell, f.GRID_DPI)
    cells: list[list[f.Tile]] = []
    for k, values in enumerate(maps):
        if k % columns == 0:
            cells.append([])
        tile = f.overlay_tile(values, backgrounds[k] if k < len(backgrounds) else None, size, vmax, signed)
        cells[-1].append(f.Tile(tile, titles[k] if k < len(titles) and titles[k] else ""))
    lines = max((str(t).count("\n") + 1 for t in titles if t), default=0)
    return f.tile_grid(cells, cell=cell, title=str(spec.get("title") or ""), under_lines=lines,
                       colorbar=(_norm(vmax, signed), _cmap(signed), str(spec.get("colorbar", "attribution"))),
                       under_fontsize=6 if columns > 8 else 6.5)


@cached
def case_grid(
    images: Sequence[np.ndarray],
    row_titles: Sequence[str],
    columns: Mapping[str, Mapping[str, Any]],
) -> str:
    """Rows = samples; columns = the image, then every explainer's map side by side.

    ``columns`` maps an explainer name to ``{maps: (N, H, W), signed: bool,
    scale: float, labels: [str] (a line under each map, e.g. its trust)}``.
    Every explainer's maps are divided by its own ``scale`` (its 99th
    percentile of |attribution| over all the images it explained), so one
    colour bar, in those units, reads every column. Drawn as one composed
    picture (:func:`~xai_audit.report.figures.tile_grid`).
    """
    names = list(columns)
    cell = 1.1
    size = f.tile_pixels(cell, f.GRID_DPI)
    cells = []
    lines = 0
    for row, image in enumerate(images):
        tiles = [f.Tile(f.image_tile(image, size))]
        for name in names:
            spec = columns[name]
            values = np.asarray(spec["maps"][row], dtype=np.float32) / max(float(spec["scale"]), 1e-12)
            labels = spec.get("labels") or []
            under = str(labels[row]) if row < len(labels) and labels[row] else ""
            lines = max(lines, under.count("\n") + 1 if under else 0)
            tiles.append(f.Tile(f.overlay_tile(values, image, size, 1.0, bool(spec["signed"])), under))
        cells.append(tiles)
    return f.tile_grid(cells, cell=cell, row_labels=list(row_titles), label_width=1.35,
                       column_titles=["image", *names], under_lines=lines,
                       colorbar=(_norm(1.0, True), _cmap(True), "attribution ÷ the explainer's 99th pct.")
                       if names else None, fontsize=6.8)


def _norm(vmax: float, signed: bool) -> Normalize:
    return Normalize(-vmax, vmax) if signed else Normalize(0.0, vmax)


def _cmap(signed: bool) -> Any:
    cmap = matplotlib.colormaps[f.SIGNED_CMAP]
    if signed:
        return cmap
    return matplotlib.colors.LinearSegmentedColormap.from_list("positive_half", cmap(np.linspace(0.5, 1.0, 128)))
