"""Heatmap figures: tiles of maps (the ``heatmaps`` spec kind) and the per-case grid of every explainer.

Overlays follow one rule everywhere: a signed map uses the diverging colour
map centred at 0 (red toward the class, blue against), an unsigned map the
red half of it; opacity grows with |value|, over a grey copy of the image;
one colour scale per figure, with its colour bar.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from xai_audit.report import figures as f

#: grey levels of the image under an overlay
_IMAGE_ALPHA = 0.55


def draw_overlay(ax: Any, values: np.ndarray, image: np.ndarray | None, vmax: float, signed: bool) -> None:
    """One map on ``ax``: over a grey copy of ``image`` when given, scaled to ``[-vmax, vmax]``."""
    cmap = matplotlib.colormaps[f.SIGNED_CMAP]
    norm = Normalize(-vmax, vmax)
    values = np.nan_to_num(np.asarray(values, dtype=np.float32))
    if not signed:
        values = np.maximum(values, 0.0)
    if image is not None:
        rgb = f._to_rgb(image)
        gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        height, width = gray.shape
        ax.imshow(gray, cmap="gray", vmin=0.0, vmax=1.0, alpha=_IMAGE_ALPHA, interpolation="nearest")
        rgba = cmap(norm(values))
        rgba[..., 3] = 0.92 * np.clip(np.abs(values) / vmax, 0.0, 1.0) ** 0.6
        ax.imshow(rgba, extent=(-0.5, width - 0.5, height - 0.5, -0.5), interpolation="bilinear")
    else:
        ax.imshow(values, cmap=cmap, norm=norm, interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.spines[:].set_visible(False)


def colorbar(fig: Any, axes: Any, vmax: float, signed: bool, label: str, shrink: float = 0.8) -> None:
    norm = Normalize(-vmax, vmax) if signed else Normalize(0.0, vmax)
    cmap = matplotlib.colormaps[f.SIGNED_CMAP]
    if not signed:
        cmap = matplotlib.colors.LinearSegmentedColormap.from_list(
            "positive_half", cmap(np.linspace(0.5, 1.0, 128)))
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=shrink, pad=0.02, aspect=24)
    bar.set_label(f._plain(label, 60), fontsize=7)
    bar.ax.tick_params(labelsize=6.5)
    bar.outline.set_visible(False)


def heatmap_tiles(spec: Mapping[str, Any]) -> str:
    """The ``heatmaps`` spec kind: ``maps`` (K, h, w); optional ``image`` (3, H, W) under every
    map or ``images`` (K, 3, H, W), ``titles``, ``columns``, ``signed``, ``colorbar`` (label) and
    ``normalise`` ("shared", the default: one scale; "each": every map to its own 99th percentile)."""
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
    rows = (len(maps) + columns - 1) // columns
    tile = 1.05 if columns <= 8 else 0.72
    title_space = 0.35 if spec.get("title") else 0.0
    fig = f._figure(tile * columns + 0.9, (tile + 0.22) * rows + title_space)
    if spec.get("title"):
        fig.suptitle(f._plain(spec["title"], 100), fontsize=8.5)
    axes = fig.subplots(rows, columns, squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(maps):
            ax.set_axis_off()
            continue
        draw_overlay(ax, maps[k], backgrounds[k], vmax, signed)
        if k < len(titles) and titles[k]:
            ax.set_title(f._plain(titles[k], 22), fontsize=6 if columns > 8 else 6.5)
    colorbar(fig, axes.ravel().tolist(), vmax, signed, str(spec.get("colorbar", "attribution")),
             shrink=min(0.9, 0.5 + 0.15 * rows))
    return f._encode(fig, dpi=f.GRID_DPI)


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
    colour bar, in those units, reads every column.
    """
    names = list(columns)
    n_rows, n_cols = len(images), 1 + len(names)
    cell, label_width = 1.25, 1.5
    fig = f._figure(label_width + cell * n_cols + 0.8, 0.35 + (cell + 0.18) * n_rows)
    grid = fig.subplots(n_rows, n_cols + 1, squeeze=False,
                        gridspec_kw={"width_ratios": [label_width / cell] + [1.0] * n_cols})
    labels, axes = grid[:, 0], grid[:, 1:]
    for row in range(n_rows):
        labels[row].set_axis_off()
        labels[row].text(1.0, 0.5, f._plain(row_titles[row], 30), transform=labels[row].transAxes,
                         ha="right", va="center", fontsize=6.8, linespacing=1.4)
        axes[row, 0].imshow(f._to_rgb(images[row]), interpolation="nearest")
        axes[row, 0].set_xticks([])
        axes[row, 0].set_yticks([])
        axes[row, 0].spines[:].set_visible(False)
        for col, name in enumerate(names, start=1):
            spec = columns[name]
            values = np.asarray(spec["maps"][row], dtype=np.float32) / max(float(spec["scale"]), 1e-12)
            draw_overlay(axes[row, col], values, images[row], 1.0, bool(spec["signed"]))
            lines = spec.get("labels") or []
            if row < len(lines) and lines[row]:
                axes[row, col].set_xlabel(f._plain(lines[row], 24), fontsize=5.8, labelpad=1.5)
    axes[0, 0].set_title("image", fontsize=7.5)
    for col, name in enumerate(names, start=1):
        axes[0, col].set_title(f._plain(name, 20), fontsize=7.5)
    if names:
        colorbar(fig, axes[:, 1:].ravel().tolist(), 1.0, True,
                 "attribution ÷ the explainer's 99th pct.",
                 shrink=min(0.9, 0.45 + 0.12 * n_rows))
    return f._encode(fig, f.GRID_DPI)
