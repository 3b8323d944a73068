"""Report figures as data URIs: charts drawn with matplotlib's Agg canvas, tile grids composed with Pillow.

Every function takes plain numbers, strings and arrays, draws one figure and
returns ``data:image/png;base64,...``. No pyplot: each figure is a bare
:class:`~matplotlib.figure.Figure` on an explicit Agg canvas, so nothing is
registered in pyplot's global figure list, no GUI backend is ever touched,
and each figure is cleared once encoded.

Text that comes from models or data sets (class names, group values, sample
ids) goes through :func:`_plain`, so a ``$`` never switches on mathtext.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.colors import Normalize, to_hex
from PIL import Image, ImageDraw, ImageFont

from xai_audit.report.display import DataURI
from xai_audit.report.figcache import cached

if TYPE_CHECKING:  # matplotlib's figure and Agg modules are imported when a figure is drawn, not for a cached one
    from matplotlib.figure import Figure

#: Resolution of the charts; with the sizes below a chart stays well under 150 KB.
DPI = 110
#: Resolution of explanation grids (photographic content compresses poorly).
GRID_DPI = 96
#: A PNG larger than this (bytes) is stored with a 256-colour palette instead
#: (smaller, at the cost of some banding in smooth gradients).
PALETTE_ABOVE_BYTES = 140_000

#: Colour map for signed attributions (red = toward the explained class).
SIGNED_CMAP = "RdBu_r"
#: Colour map for unsigned attributions (importance only).
UNSIGNED_CMAP = "inferno"

_INK = "#1f2933"
_MUTED = "#6b7785"
_ACCENT = "#3b6ea8"
_STYLE = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "axes.edgecolor": "#9aa5b1",
    "axes.labelcolor": _INK,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": _INK,
    "ytick.color": _INK,
    "text.color": _INK,
    "svg.fonttype": "none",
}


def class_colors(classes: Sequence[str]) -> dict[str, str]:
    """One fixed colour per class (hex), from tab10, or tab20 past ten classes."""
    palette = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    n = palette.N
    return {name: to_hex(palette(i % n)) for i, name in enumerate(classes)}


@cached
def confusion_matrix_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """Counts annotated in each cell; colour is the row-normalised share."""
    from matplotlib.ticker import PercentFormatter
    from matplotlib.transforms import ScaledTranslation

    counts = np.asarray(matrix, dtype=np.int64)
    k = counts.shape[0]
    row_sums = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_sums, out=np.zeros(counts.shape, float), where=row_sums > 0)
    colors = class_colors(classes)
    names = [_plain(c, 18) for c in classes]
    size = min(9.0, max(3.8, 0.62 * k + 1.9))
    with _style():
        fig = _figure(size + 0.9, size)
        ax = fig.add_subplot()
        image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(k):
            for j in range(k):
                ax.text(
                    j, i, str(counts[i, j]), ha="center", va="center",
                    fontsize=8 if k <= 10 else 6,
                    color="white" if shares[i, j] > 0.55 else _INK,
                    fontweight="bold" if i == j else "normal",
                )
        ax.set_xticks(range(k), names, rotation=40, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(k), names)
        # A short bar in each class's colour beside its row and under its column.
        left = ax.transData + ScaledTranslation(-5 / 72, 0, fig.dpi_scale_trans)
        below = ax.transData + ScaledTranslation(0, -5 / 72, fig.dpi_scale_trans)
        for i, name in enumerate(classes):
            style = {"color": colors[name], "linewidth": 4, "solid_capstyle": "butt", "clip_on": False}
            ax.plot([-0.5, -0.5], [i - 0.38, i + 0.38], transform=left, **style)
            ax.plot([i - 0.38, i + 0.38], [k - 0.5, k - 0.5], transform=below, **style)
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        ax.spines[:].set_visible(False)
        ax.tick_params(length=0, pad=11)
        colorbar = fig.colorbar(image, ax=ax, shrink=0.75, pad=0.02)
        colorbar.set_label("Share of the true class's samples")
        colorbar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        colorbar.outline.set_visible(False)
        return _encode(fig)


@cached
def group_accuracy_figure(
    groups: Sequence[Mapping[str, object]],
    attribute: str,
    overall: float | None = None,
) -> str:
    """Accuracy per group value with its confidence interval as error bars.

    Each entry of ``groups`` has ``label`` (str), ``n`` (int), ``accuracy``
    (float or None) and ``ci`` ((lo, hi) or None).
    """
    from matplotlib.ticker import PercentFormatter

    labels = [f"{_plain(g['label'], 16)}\nn = {g['n']}" for g in groups]
    values = [_number(g.get("accuracy")) for g in groups]
    lower, upper = [], []
    for group, value in zip(groups, values):
        ci = group.get("ci")
        if ci is None or np.isnan(value):
            lower.append(0.0)
            upper.append(0.0)
        else:
            lower.append(max(0.0, value - float(ci[0])))
            upper.append(max(0.0, float(ci[1]) - value))
    width = min(9.0, max(4.2, 0.75 * len(groups) + 2.0))
    with _style():
        fig = _figure(width, 3.0)
        ax = fig.add_subplot()
        x = np.arange(len(groups))
        ax.bar(x, np.nan_to_num(values), width=0.6, color=_ACCENT, alpha=0.85, zorder=2)
        ax.errorbar(x, np.nan_to_num(values), yerr=[lower, upper], fmt="none",
                    ecolor=_INK, elinewidth=1.1, capsize=4, zorder=3)
        if overall is not None:
            ax.axhline(overall, color=_MUTED, linestyle="--", linewidth=1, zorder=4)
            ax.text(1.01, overall, f"overall\n{overall * 100:.1f} %", transform=ax.get_yaxis_transform(),
                    ha="left", va="center", fontsize=7.5, color=_MUTED)
        ax.set_xticks(x, labels)
        ax.set_ylim(0, 1.05)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        ax.set_ylabel("Accuracy (95 % CI)")
        ax.set_xlabel(_plain(attribute, 40))
        ax.grid(axis="y", color="#e4e7eb", linewidth=0.8, zorder=0)
        return _encode(fig)


@cached
def hypothesis_figure(
    metric: str,
    before: float | None,
    after: float | None,
    effect: float | None,
    ci: Sequence[float] | None,
    percent: bool = False,
) -> str:
    """Metric before and after the intervention, and the effect with its CI."""
    from matplotlib.ticker import PercentFormatter

    with _style():
        fig = _figure(6.4, 2.5)
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 1.25]})
        values = [_number(before), _number(after)]
        left.bar([0, 1], np.nan_to_num(values), width=0.55,
                 color=["#9aa5b1", _ACCENT], zorder=2)
        for x, value in enumerate(values):
            if not np.isnan(value):
                text = f"{value * 100:.1f} %" if percent else f"{value:.3g}"
                left.text(x, value, text, ha="center", va="bottom", fontsize=8)
        left.set_xticks([0, 1], ["before", "after"])
        left.set_ylabel(_plain(metric, 30))
        if percent:
            left.set_ylim(0, 1.12)
            left.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        else:
            left.margins(y=0.15)
        left.grid(axis="y", color="#e4e7eb", linewidth=0.8, zorder=0)
        left.set_title("Metric", loc="left")

        scale = 100.0 if percent else 1.0
        right.axvline(0.0, color=_MUTED, linewidth=1)
        if effect is not None:
            lo, hi = (float(ci[0]), float(ci[1])) if ci is not None else (effect, effect)
            right.errorbar([effect * scale], [0], xerr=[[(effect - lo) * scale], [(hi - effect) * scale]],
                           fmt="o", color=_ACCENT, ecolor=_INK, capsize=5, markersize=7)
            span = max(abs(lo), abs(hi), abs(effect), 1e-9) * scale
            right.set_xlim(-1.25 * span, 1.25 * span)
        else:
            right.text(0.5, 0.5, "not computed", transform=right.transAxes,
                       ha="center", va="center", color=_MUTED)
        right.set_yticks([])
        right.spines["left"].set_visible(False)
        right.set_xlabel("Effect (percentage points)" if percent else "Effect")
        right.set_title("Effect with 95 % CI (positive = harm)", loc="left")
        return _encode(fig)


@cached
def explanation_grid(
    images: Sequence[np.ndarray],
    overlays: Mapping[str, np.ndarray],
    row_titles: Sequence[str],
    signed: bool,
) -> str:
    """Rows = samples; columns = the image, then one overlay per explainer.

    ``images`` are (3, H, W) in [0, 1]; ``overlays`` maps an explainer name
    to maps (N, H, W) aligned with ``images``. All overlays share ONE colour
    scale: the 99th percentile of |values| over the whole figure, centred at
    0 with a diverging map when ``signed``, sequential from 0 otherwise.
    Drawn as one composed picture (:func:`tile_grid`).
    """
    names = list(overlays)
    vmax = robust_scale([overlays[name] for name in names])
    cmap = SIGNED_CMAP if signed else UNSIGNED_CMAP
    norm = Normalize(-vmax, vmax) if signed else Normalize(0.0, vmax)
    cell = 1.3
    size = tile_pixels(cell, GRID_DPI)
    cells = []
    for row, image in enumerate(images):
        tiles = [Tile(image_tile(image, size))]
        for name in names:
            values = np.asarray(overlays[name][row], dtype=np.float32)
            tiles.append(Tile(overlay_tile(values, image, size, vmax, signed, cmap=cmap)))
        cells.append(tiles)
    return tile_grid(
        cells, cell=cell, row_labels=list(row_titles), label_width=1.45,
        column_titles=["image", *names],
        colorbar=(norm, cmap, "attribution (red toward, blue against)" if signed else "attribution (importance)"),
    )


def robust_scale(maps: Sequence[np.ndarray]) -> float:
    """The 99th percentile of |values| over all ``maps`` (1.0 when it is 0 or undefined)."""
    if not maps:
        return 1.0
    values = np.concatenate([np.abs(np.asarray(m, dtype=np.float64)).ravel() for m in maps])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 1.0
    scale = float(np.percentile(values, 99))
    return scale if scale > 0 else (float(values.max()) or 1.0)


# -- image grids: one composed picture, not one axes per tile -------------------


@dataclass
class Tile:
    """One cell of an image grid: an RGB picture (H, W, 3) in [0, 1] at the cell's pixel size, or None (blank)."""

    rgb: np.ndarray | None
    under: str = ""  # a short line under the picture


def tile_pixels(inches: float, dpi: int) -> int:
    return max(8, int(round(inches * dpi)))


def image_tile(image: np.ndarray, size: int) -> np.ndarray:
    """A display image (3, H, W) in [0, 1] as an RGB picture of ``size`` x ``size`` pixels (nearest neighbour)."""
    return _resize(_to_rgb(image), size, smooth=False)


def overlay_tile(values: np.ndarray, image: np.ndarray | None, size: int, vmax: float, signed: bool,
                 cmap: str = SIGNED_CMAP, image_alpha: float = 0.55) -> np.ndarray:
    """A map over a grey copy of ``image`` (or alone), ``size`` x ``size`` pixels, as matplotlib would draw it:
    the grey image at ``image_alpha`` over white (nearest neighbour), then the map (bilinear) in ``cmap``
    scaled to ±vmax (0..vmax unsigned), its opacity growing with |value|."""
    colours = matplotlib.colormaps[cmap]
    values = np.nan_to_num(np.asarray(values, dtype=np.float32))
    if values.ndim == 3:
        values = values.mean(axis=0)
    if not signed:
        values = np.maximum(values, 0.0)
    values = _resize(values, size, smooth=True)
    vmax = float(vmax) if vmax and np.isfinite(vmax) and vmax > 0 else 1.0
    norm = Normalize(-vmax, vmax) if signed or cmap == SIGNED_CMAP else Normalize(0.0, vmax)
    rgba = colours(norm(values)).astype(np.float32)
    if image is None:
        return rgba[..., :3]
    gray = _resize(_to_rgb(image) @ np.array([0.299, 0.587, 0.114], dtype=np.float32), size, smooth=False)
    under = (image_alpha * gray + (1.0 - image_alpha))[..., None]
    alpha = (0.92 * np.clip(np.abs(values) / vmax, 0.0, 1.0) ** 0.6)[..., None]
    return alpha * rgba[..., :3] + (1.0 - alpha) * under


def tile_grid(
    cells: Sequence[Sequence[Tile]],
    *,
    cell: float,
    row_labels: Sequence[str] = (),
    label_width: float = 0.0,
    column_titles: Sequence[str] = (),
    title: str = "",
    colorbar: tuple[Normalize, str, str] | None = None,
    under_lines: int = 0,
    fontsize: float = 7.0,
    under_fontsize: float = 5.8,
    dpi: int = 0,
) -> DataURI:
    """Cells (rows x columns of :class:`Tile`) as ONE composed picture with its text drawn around it.

    Every tile is pasted into one array; row labels sit right-aligned at the left, column titles above the
    first row, ``under`` lines beneath each tile, and ``colorbar`` (norm, colour map name, label) at the right.
    The picture is composed with Pillow, its text set in the charts' font (:func:`_font`): there is nothing in
    it for matplotlib to lay out, and its Agg text renderer took 0.13 s a grid (5.4 s for the demo's 41 grids,
    half of it rasterising glyphs one Python call each), Pillow's a few milliseconds.
    """
    dpi = dpi or GRID_DPI
    longest = max((len(line) for label in row_labels for line in _clipped(label, 36).splitlines()), default=0)
    if longest:  # room for the longest label line (DejaVu Sans averages under 0.6 em a character)
        label_width = max(label_width, 0.6 * fontsize * 0.95 / 72 * longest + 0.12)
    n_rows = len(cells)
    n_cols = max((len(r) for r in cells), default=0)
    size = tile_pixels(cell, dpi)
    gap = max(2, int(round(0.05 * dpi)))
    line = fontsize / 72 * 1.35  # inches per text line
    under = under_lines * under_fontsize / 72 * 1.3
    title_h = (line * 1.2 if title else 0.0) + (line * 1.1 if column_titles else 0.0) + 0.06
    bar_w = 0.95 if colorbar else 0.0
    width = label_width + n_cols * (cell + gap / dpi) + bar_w + 0.08
    height = title_h + n_rows * (cell + under + gap / dpi) + 0.08
    W, H = int(round(width * dpi)), int(round(height * dpi))
    canvas = np.ones((H, W, 3), dtype=np.float32)
    x0 = int(round(label_width * dpi))
    y0 = int(round(title_h * dpi))
    step_x = size + gap
    step_y = size + gap + int(round(under * dpi))
    texts: list[tuple[float, float, str, float, str, str, float]] = []  # x, y, text, points, ha, va, spacing
    for r, row in enumerate(cells):
        top = y0 + r * step_y
        for c, tile in enumerate(row):
            left = x0 + c * step_x
            if tile.rgb is not None:
                canvas[top:top + size, left:left + size] = np.clip(tile.rgb[:size, :size], 0.0, 1.0)
            if tile.under:
                texts.append((left + size / 2, top + size + 1, _clipped(tile.under, 26), under_fontsize,
                              "center", "top", 1.15))
        if r < len(row_labels) and row_labels[r]:
            texts.append((x0 - gap * 2, top + size / 2, _clipped(row_labels[r], 36), fontsize * 0.95,
                          "right", "center", 1.35))
    for c, name in enumerate(column_titles):
        texts.append((x0 + c * step_x + size / 2, y0 - 3, _clipped(name, 24), fontsize + 0.5, "center", "bottom", 1.2))
    if title:
        texts.append((W / 2, 2, _clipped(title, 100), fontsize + 1.5, "center", "top", 1.2))
    image = Image.fromarray(np.round(canvas * 255.0).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for x, y, text, points, ha, va, spacing in texts:
        _draw_text(draw, x, y, text, _font(points * dpi / 72), ha, va, spacing)
    if colorbar is not None:
        grid_h = n_rows * step_y - gap
        bar_h = int(round(min(grid_h, max(1.2 * dpi, 0.8 * grid_h))))
        _colour_bar(image, draw, colorbar, left=int(round(x0 + n_cols * step_x + 0.12 * dpi)),
                    top=int(round(y0 + (grid_h - bar_h) / 2)), width=max(2, int(round(0.11 * dpi))),
                    height=max(2, bar_h), fontsize=fontsize, dpi=dpi)
    return _png_uri(image)


def _colour_bar(image: Image.Image, draw: ImageDraw.ImageDraw, colorbar: tuple[Normalize, str, str], *, left: int,
                top: int, width: int, height: int, fontsize: float, dpi: int) -> None:
    """A vertical colour bar drawn into ``image`` as matplotlib draws one: the colours from the norm's
    maximum (top) to its minimum, ticks where matplotlib's default locator puts them, their labels, and the
    bar's label set upright along its right side."""
    from matplotlib.ticker import MaxNLocator

    norm, cmap, label = colorbar
    colours = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    vmin, vmax = float(norm.vmin), float(norm.vmax)
    values = vmax - (vmax - vmin) * (np.arange(height) + 0.5) / height
    strip = np.asarray(colours(norm(values)))[:, :3]
    image.paste(Image.fromarray(np.round(np.repeat(strip[:, None, :], width, axis=1) * 255.0).astype(np.uint8)),
                (left, top))
    tick_points = fontsize - 1
    font = _font(tick_points * dpi / 72)
    # matplotlib's default: MaxNLocator with nbins "auto", as many as two label heights fit, at most 9
    nbins = max(1, min(9, int(height / dpi * 72 // (2 * tick_points))))
    ticks = [float(t) for t in MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10]).tick_values(vmin, vmax)
             if vmin - 1e-9 * abs(vmax - vmin) <= t <= vmax + 1e-9 * abs(vmax - vmin)]
    tick_len = 3.5 * dpi / 72
    right = left + width
    widest = 0.0
    for value, text in zip(ticks, _tick_labels(ticks)):
        y = top + (vmax - value) / (vmax - vmin) * (height - 1) if vmax > vmin else top + height / 2
        draw.line([(right, y), (right + tick_len, y)], fill=_INK, width=1)
        _draw_text(draw, right + tick_len + 3.5 * dpi / 72, y, text, font, "left", "center", 1.2)
        widest = max(widest, draw.textlength(text, font=font))
    label_font = _font((fontsize - 0.5) * dpi / 72)
    text = _clipped(label, 60)
    ascent, descent = label_font.getmetrics()
    strip_w = int(np.ceil(draw.textlength(text, font=label_font))) + 2
    mask = Image.new("L", (strip_w, ascent + descent + 2), 0)
    ImageDraw.Draw(mask).text((1, 1), text, font=label_font, fill=255)
    mask = mask.rotate(90, expand=True)  # reads bottom to top, as matplotlib sets a vertical label
    x = int(round(right + tick_len + 3.5 * dpi / 72 + widest + 4 * dpi / 72))
    y = int(round(top + height / 2 - mask.height / 2))
    image.paste(Image.new("RGB", mask.size, _INK), (x, y), mask)


def _tick_labels(ticks: Sequence[float]) -> list[str]:
    """Tick labels as matplotlib's scalar formatter writes them: one number of decimals for all, a minus sign
    (U+2212); in scientific notation where the ticks are tiny or huge."""
    if not ticks:
        return []
    biggest = max(abs(t) for t in ticks)
    if biggest and not 1e-3 <= biggest < 1e5:
        return [f"{t:.2g}".replace("-", "\u2212") for t in ticks]
    for decimals in range(0, 7):
        if all(abs(round(t, decimals) - t) <= 1e-9 * max(biggest, 1e-12) for t in ticks):
            break
    return [f"{t:.{decimals}f}".replace("-", "\u2212") for t in ticks]


def _draw_text(draw: ImageDraw.ImageDraw, x: float, y: float, text: str, font: ImageFont.FreeTypeFont, ha: str,
               va: str, spacing: float) -> None:
    """``text`` (lines) at (x, y) aligned as matplotlib's ``ha`` (left, center, right) and ``va`` (top, center,
    bottom) place a text's box, its lines as far apart as matplotlib sets them at line spacing ``spacing``
    (about nine tenths of the font size times it, baseline to baseline)."""
    lines = text.split("\n")
    ascent, descent = font.getmetrics()
    step = 0.9 * font.size * spacing
    block = ascent + descent + step * (len(lines) - 1)
    first = {"top": y, "center": y - block / 2, "bottom": y - block}[va] + ascent
    anchor = {"left": "ls", "center": "ms", "right": "rs"}[ha]
    for k, line in enumerate(lines):
        if line:
            draw.text((x, first + k * step), line, font=font, fill=_INK, anchor=anchor)


@functools.lru_cache(maxsize=None)
def _font(pixels: float) -> ImageFont.FreeTypeFont:
    """The charts' font (:data:`_STYLE`'s sans-serif, found by matplotlib) at ``pixels`` pixels an em."""
    from matplotlib import font_manager

    path = font_manager.findfont(font_manager.FontProperties(family=_STYLE["font.sans-serif"]))
    return ImageFont.truetype(path, size=round(pixels, 2))


def _resize(array: np.ndarray, size: int, smooth: bool) -> np.ndarray:
    """``array`` (H, W) or (H, W, C), float, resized to size x size (bilinear when ``smooth``, else nearest)."""
    array = np.asarray(array, dtype=np.float32)
    if array.shape[0] == size and array.shape[1] == size:
        return array
    method = Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST
    if array.ndim == 2:
        return np.asarray(Image.fromarray(array, mode="F").resize((size, size), method), dtype=np.float32)
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(array[..., k]), mode="F")
                                .resize((size, size), method), dtype=np.float32) for k in range(array.shape[-1])],
                    axis=-1)


# -- helpers -----------------------------------------------------------------


@contextlib.contextmanager
def _style() -> Iterator[None]:
    with matplotlib.rc_context(_STYLE):
        yield


#: A chart's margins (inches: left, right, bottom, top), room for its tick and axis labels, title, colour bar
#: and a note beside the axes; what the chart does not use of them is cropped once it is drawn (:func:`_encode`)
MARGINS = (1.05, 0.6, 0.9, 0.45)
#: inches a chart's canvas grows by beyond the size asked for (width, height), so its plot area stays about as
#: large as a layout engine fitted to that size made it (about 0.65 x 0.7 inches of labels around the axes)
_GROWTH = (MARGINS[0] + MARGINS[1] - 0.65, MARGINS[2] + MARGINS[3] - 0.7)
#: blank border kept around a cropped chart (inches)
_CROP_PAD = 0.06
#: charts laid out with :data:`MARGINS` and cropped when encoded (a tile grid places everything itself)
_CROPPED: "weakref.WeakKeyDictionary[Figure, tuple[float, float]]" = weakref.WeakKeyDictionary()


def _figure(width: float, height: float) -> Figure:
    """A chart of about ``width`` x ``height`` inches, its axes placed with fixed margins (:data:`MARGINS`).

    No layout engine: matplotlib's constrained layout measured every axes' labels twice before the one draw
    that counts (drawing the demo report's figures and HTML took 9.25 s of CPU with it, 8.47 s without). The
    chart is drawn once, on a canvas with room to spare, and :func:`_encode` crops the blank border; where a
    label does not fit the margins (it reaches the canvas edge) the chart is laid out by constrained layout at
    its asked size and drawn again."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    w, h = width + _GROWTH[0], height + _GROWTH[1]
    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)  # explicit Agg canvas: never a GUI backend
    left, right, bottom, top = MARGINS
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h)
    _CROPPED[fig] = (width, height)
    return fig


def _drawn(fig: Figure) -> np.ndarray:
    """The figure drawn on its Agg canvas: its RGB pixels (H, W, 3), uint8."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3]


def _cropped(fig: Figure, pixels: np.ndarray) -> np.ndarray:
    """A chart's pixels without the blank border its margins left (a small one kept), or drawn again by
    constrained layout when something reaches the canvas edge (a label longer than its margin). A view of the
    canvas: :func:`_encode` copies it."""
    ink = (pixels != 255).any(axis=-1)
    if ink[0].any() or ink[-1].any() or ink[:, 0].any() or ink[:, -1].any():
        fig.set_size_inches(*_CROPPED[fig])
        fig.set_layout_engine("constrained")
        return _drawn(fig)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return pixels
    pad = max(1, int(round(_CROP_PAD * fig.dpi)))
    top, bottom = max(0, rows[0] - pad), min(pixels.shape[0], rows[-1] + 1 + pad)
    left, right = max(0, cols[0] - pad), min(pixels.shape[1], cols[-1] + 1 + pad)
    return pixels[top:bottom, left:right]


def _encode(fig: Figure, dpi: int = DPI) -> DataURI:
    """PNG data URI; a figure over the size budget is reduced to a 256-colour palette.

    The figure is drawn on its Agg canvas and its pixels are taken from there (as savefig would draw them,
    without encoding a PNG that would only be read back), then encoded once, quickly: the PNG is a figure's
    copy in the HTML and its cache entry; WeasyPrint decodes it and encodes the PDF's copy itself. A chart
    made by :func:`_figure` is cropped to what was drawn (:func:`_cropped`)."""
    try:
        fig.set_dpi(dpi)
        fig.set_facecolor("white")
        pixels = _drawn(fig)
        if fig in _CROPPED:
            pixels = _cropped(fig, pixels)
        image = Image.fromarray(pixels.copy())  # off the canvas's buffer, which the figure keeps
    finally:
        fig.clear()
    return _png_uri(image)


def _png_uri(image: Image.Image) -> DataURI:
    """``image`` as a PNG data URI, reduced to a 256-colour palette when it is over the size budget."""
    data = _png(image, level=1)
    if len(data) > PALETTE_ABOVE_BYTES:
        data = _png(image.quantize(256, method=Image.Quantize.FASTOCTREE))
    return DataURI("data:image/png;base64," + base64.b64encode(data).decode("ascii"))


def _png(image: Image.Image, level: int = 6) -> bytes:
    """``image`` as PNG: zlib ``level`` 1 for a full-colour figure (half the time of 6, a tenth larger), 6 for a
    palette image (small and fast either way)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def _plain(text: object, limit: int) -> str:
    """Text safe for matplotlib: no mathtext, at most ``limit`` characters a line."""
    return _clipped(text, limit).replace("$", r"\$")


def _clipped(text: object, limit: int) -> str:
    """``text`` with at most ``limit`` characters a line (Pillow sets a ``$`` as it is: no escape)."""
    lines = []
    for line in str(text).splitlines() or [""]:
        if len(line) > limit:
            line = line[: limit - 1] + "…"
        lines.append(line)
    return "\n".join(lines)


def _number(value: object) -> float:
    return float("nan") if value is None else float(value)  # type: ignore[arg-type]


def _to_rgb(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = np.repeat(array[None], 3, axis=0)
    if array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    return np.clip(np.nan_to_num(array[:3].transpose(1, 2, 0)), 0.0, 1.0)
