"""Report figures, drawn with matplotlib's Agg canvas and returned as data URIs.

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
import io
from typing import Iterator, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from matplotlib.transforms import ScaledTranslation
from PIL import Image

from xai_audit.report.display import DataURI

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


def confusion_matrix_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """Counts annotated in each cell; colour is the row-normalised share."""
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


def group_accuracy_figure(
    groups: Sequence[Mapping[str, object]],
    attribute: str,
    overall: float | None = None,
) -> str:
    """Accuracy per group value with its confidence interval as error bars.

    Each entry of ``groups`` has ``label`` (str), ``n`` (int), ``accuracy``
    (float or None) and ``ci`` ((lo, hi) or None).
    """
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


def hypothesis_figure(
    metric: str,
    before: float | None,
    after: float | None,
    effect: float | None,
    ci: Sequence[float] | None,
    percent: bool = False,
) -> str:
    """Metric before and after the intervention, and the effect with its CI."""
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
    """
    names = list(overlays)
    n_rows, n_cols = len(images), 1 + len(names)
    vmax = robust_scale([overlays[name] for name in names])
    cmap = matplotlib.colormaps[SIGNED_CMAP if signed else UNSIGNED_CMAP]
    norm = Normalize(-vmax, vmax) if signed else Normalize(0.0, vmax)
    cell, label_width = 1.55, 1.45
    with _style():
        fig = _figure(label_width + cell * n_cols + 0.9, 0.45 + cell * n_rows)
        grid = fig.subplots(n_rows, n_cols + 1, squeeze=False,
                            gridspec_kw={"width_ratios": [label_width / cell] + [1.0] * n_cols})
        labels, axes = grid[:, 0], grid[:, 1:]
        for row in range(n_rows):
            rgb = _to_rgb(images[row])
            gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            height, width = gray.shape
            extent = (-0.5, width - 0.5, height - 0.5, -0.5)
            labels[row].set_axis_off()
            labels[row].text(1.0, 0.5, _plain(row_titles[row], 36), transform=labels[row].transAxes,
                             ha="right", va="center", fontsize=7.5, linespacing=1.45)
            axes[row, 0].imshow(rgb, interpolation="nearest")
            for col, name in enumerate(names, start=1):
                values = np.nan_to_num(np.asarray(overlays[name][row], dtype=np.float32))
                rgba = cmap(norm(values))
                strength = np.abs(values) if signed else np.maximum(values, 0.0)
                rgba[..., 3] = 0.92 * np.clip(strength / vmax, 0.0, 1.0) ** 0.6
                ax = axes[row, col]
                ax.imshow(gray, cmap="gray", vmin=0.0, vmax=1.0, alpha=0.55, interpolation="nearest")
                ax.imshow(rgba, extent=extent, interpolation="bilinear")
            for ax in axes[row]:
                ax.set_xticks([])
                ax.set_yticks([])
                ax.spines[:].set_visible(False)
        axes[0, 0].set_title("image")
        for col, name in enumerate(names, start=1):
            axes[0, col].set_title(_plain(name, 28))
        mappable = ScalarMappable(norm=norm, cmap=cmap)
        colorbar = fig.colorbar(mappable, ax=axes[:, 1:].ravel().tolist(), shrink=min(0.9, 2.2 / n_rows + 0.25),
                                pad=0.04, aspect=22)
        colorbar.set_label("attribution (red toward, blue against)" if signed else "attribution (importance)")
        colorbar.outline.set_visible(False)
        return _encode(fig, GRID_DPI)


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


# -- helpers -----------------------------------------------------------------


@contextlib.contextmanager
def _style() -> Iterator[None]:
    with matplotlib.rc_context(_STYLE):
        yield


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # explicit Agg canvas: never a GUI backend
    return fig


def _encode(fig: Figure, dpi: int = DPI) -> DataURI:
    """PNG data URI; a figure over the size budget is reduced to a 256-colour palette."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    finally:
        fig.clear()
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    data = _png(image)
    if len(data) > PALETTE_ABOVE_BYTES:
        data = _png(image.quantize(256, method=Image.Quantize.FASTOCTREE))
    return DataURI("data:image/png;base64," + base64.b64encode(data).decode("ascii"))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _plain(text: object, limit: int) -> str:
    """Text safe for matplotlib: no mathtext, at most ``limit`` characters a line."""
    lines = []
    for line in str(text).splitlines() or [""]:
        if len(line) > limit:
            line = line[: limit - 1] + "…"
        lines.append(line.replace("$", r"\$"))
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
