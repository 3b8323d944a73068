"""Figures plugins describe as data are drawn by the report, whatever their kind."""

from __future__ import annotations

import numpy as np
import pytest

from xai_audit.report.specs import RENDERERS, render_spec

ARRAYS = {
    "imgs": np.random.default_rng(0).random((3, 3, 8, 8)).astype(np.float32),
    "img": np.random.default_rng(1).random((3, 8, 8)).astype(np.float32),
    "maps": np.random.default_rng(2).normal(size=(3, 4, 4)).astype(np.float32),
}
SPECS = {
    "lines": {"x": [0, 1, 2], "series": [{"label": "a", "y": [1, 2, 3]}], "title": "Betti curve"},
    "bars": {"labels": ["x", "y"], "series": [{"label": "s", "values": [0.2, 0.4], "low": [0.1, 0.3], "high": [0.3, 0.5]}]},
    "matrix": {"values": [[1, -2], [3, 4]], "rows": ["r1", "r2"], "cols": ["c1", "c2"], "signed": True},
    "images": {"images": {"array": "imgs"}, "titles": ["a", "b", "c"], "columns": 3},
    "scatter": {"x": [0, 1, 2], "y": [1, 2, 3], "groups": ["a", "b", "a"], "diagonal": True},
    "graph": {"nodes": [{"x": 0, "y": 0, "size": 2, "color": 0.1}, {"x": 1, "y": 1, "size": 1, "color": 0.9}], "edges": [[0, 1]]},
    "heatmaps": {"maps": {"array": "maps"}, "image": {"array": "img"}, "titles": ["a", "b", "c"], "signed": True,
                 "colorbar": "attribution"},
    "diagram": {"dims": [
        {"dim": 0, "birth": [0, 0, 0], "death": [0.2, 0.9, None], "significant": [False, True, False], "level": 0.5},
        {"dim": 1, "birth": [0.3, 0.4], "death": [1.2, float("inf")], "significant": [True, False], "ratio": 1.5},
    ]},
}


def test_every_kind_has_a_test_spec():
    assert set(SPECS) == set(RENDERERS)


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_each_kind_renders_to_a_png_data_uri(kind):
    figure = render_spec({"kind": kind, "caption": "cap", "alt": "alt text", **SPECS[kind]}, ARRAYS)
    assert figure["src"].startswith("data:image/png;base64,")
    assert figure["caption"] == "cap" and figure["alt"] == "alt text"


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown figure kind 'pie'"):
        render_spec({"kind": "pie"}, {})


def test_graph_nodes_may_be_coloured_by_group():
    nodes = [{"x": 0, "y": 0, "size": 2, "group": "happy"}, {"x": 1, "y": 1, "size": 1, "group": "sad"}]
    figure = render_spec({"kind": "graph", "nodes": nodes, "edges": [[0, 1]], "color_label": "class"}, {})
    assert figure["src"].startswith("data:image/png;base64,")


def test_heatmaps_share_one_scale_or_normalise_each():
    maps = np.stack([np.ones((4, 4)), 100 * np.ones((4, 4))]).astype(np.float32)
    for normalise in ("shared", "each"):
        figure = render_spec({"kind": "heatmaps", "maps": maps, "normalise": normalise, "signed": False}, {})
        assert figure["src"].startswith("data:image/png;base64,")
    with pytest.raises(ValueError, match="at least one map"):
        render_spec({"kind": "heatmaps", "maps": []}, {})


def _pixels(uri: str) -> np.ndarray:
    import base64
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def _ink_margins(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """Blank pixels between the drawing and each edge: top, bottom, left, right."""
    ink = (pixels != 255).any(axis=-1)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return rows[0], pixels.shape[0] - 1 - rows[-1], cols[0], pixels.shape[1] - 1 - cols[-1]


@pytest.mark.parametrize("kind", ["lines", "bars", "matrix", "scatter", "diagram"])
def test_a_chart_is_drawn_once_and_cropped_to_what_it_drew(kind):
    """Charts are laid out with fixed margins and cropped (figures._figure, no layout engine): what is left is
    the drawing with a thin blank border on every side, nothing cut at an edge."""
    from xai_audit.report import figures

    pixels = _pixels(render_spec({"kind": kind, "xlabel": "x label", "ylabel": "y label", **SPECS[kind]}, ARRAYS)["src"])
    pad = round(figures._CROP_PAD * figures.DPI)
    assert _ink_margins(pixels) == (pad, pad, pad, pad)


def test_a_label_past_the_margins_is_laid_out_by_constrained_layout_at_the_asked_size():
    """Something drawn past the canvas edge (here a note far right of the axes) is not cut off by the crop: the
    chart is laid out again by constrained layout, at the size asked for, and drawn again."""
    from xai_audit.report import figures

    with figures._style():
        fig = figures._figure(4.0, 2.0)
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1])
        ax.text(1.02, 0.5, "a note beside the axes that is longer than the right margin", transform=ax.transAxes)
        pixels = _pixels(figures._encode(fig))
    assert pixels.shape[:2] == (round(2.0 * figures.DPI), round(4.0 * figures.DPI))
    assert fig.get_layout_engine() is not None


def test_a_tile_grid_places_its_tiles_text_and_colour_bar():
    """A tile grid is composed with Pillow (figures.tile_grid): each tile's pixels where the grid's geometry puts
    them, a line of text under a tile that has one and none under a tile without, the colour bar's top in the
    colour map's top colour and its bottom in its bottom colour, and the bar's tick labels beside it."""
    import matplotlib
    from matplotlib.colors import Normalize

    from xai_audit.report import figures

    dpi, cell = figures.GRID_DPI, 0.5
    size = figures.tile_pixels(cell, dpi)
    green = np.zeros((size, size, 3), np.float32)
    green[..., 1] = 1.0
    cells = [[figures.Tile(green, "under me"), figures.Tile(green)]]
    pixels = _pixels(figures.tile_grid(cells, cell=cell, under_lines=1,
                                       colorbar=(Normalize(-1.0, 1.0), "RdBu_r", "attribution")))
    gap = max(2, round(0.05 * dpi))
    y0 = round(0.06 * dpi)  # no title, no column titles: the top margin alone
    for left in (0, size + gap):
        assert (pixels[y0:y0 + size, left:left + size] == [0, 255, 0]).all()
    under_first = pixels[y0 + size + 1:y0 + size + 1 + round(5.8 / 72 * 1.3 * dpi), 0:size]
    under_second = pixels[y0 + size + 1:y0 + size + 1 + round(5.8 / 72 * 1.3 * dpi), size + gap:2 * size + gap]
    assert (under_first.max(axis=-1) < 128).sum() > 10  # dark lettering
    assert (under_second == 255).all()
    bar_left = round(2 * (size + gap) + 0.12 * dpi)
    column = pixels[:, bar_left + 2]
    coloured = np.flatnonzero((column != 255).any(axis=-1))
    top, bottom = column[coloured[0]].astype(int), column[coloured[-1]].astype(int)
    cmap = matplotlib.colormaps["RdBu_r"]
    assert np.abs(top - np.round(np.asarray(cmap(0.999)[:3]) * 255)).max() <= 10  # a bar of 40-odd rows
    assert np.abs(bottom - np.round(np.asarray(cmap(0.001)[:3]) * 255)).max() <= 10
    right_of_bar = pixels[:, bar_left + round(0.11 * dpi) + 8:]
    assert (right_of_bar.max(axis=-1) < 128).sum() > 30  # tick labels and the bar's label


def test_colour_bar_tick_labels_read_as_matplotlib_writes_them():
    from xai_audit.report.figures import _tick_labels

    assert _tick_labels([-1.0, -0.5, 0.0, 0.5, 1.0]) == ["\u22121.0", "\u22120.5", "0.0", "0.5", "1.0"]
    assert _tick_labels([0.0, 0.25, 0.5]) == ["0.00", "0.25", "0.50"]
    assert _tick_labels([0, 10, 20]) == ["0", "10", "20"]
    assert _tick_labels([0.0, 0.0001, 0.0002]) == ["0", "0.0001", "0.0002"]
    assert _tick_labels([0.0, 2e-5, 4e-5]) == ["0", "2e\u221205", "4e\u221205"]
    assert _tick_labels([]) == []


def test_a_tile_grid_sets_a_dollar_sign_as_it_is(monkeypatch):
    """matplotlib needs a $ escaped (no mathtext); Pillow sets text as it is, so a tile grid's labels are not."""
    from xai_audit.report import figures

    drawn = []
    draw_text = figures._draw_text
    monkeypatch.setattr(figures, "_draw_text", lambda draw, x, y, text, *rest: (drawn.append(text),
                                                                               draw_text(draw, x, y, text, *rest)))
    size = figures.tile_pixels(0.5, figures.GRID_DPI)
    tile = figures.Tile(np.ones((size, size, 3), np.float32), "costs $5")
    figures.tile_grid([[tile]], cell=0.5, row_labels=["two $x$"], column_titles=["$y"], title="a $ title",
                      under_lines=1)
    assert sorted(drawn) == sorted(["costs $5", "two $x$", "$y", "a $ title"])
    assert figures._plain("two $x$", 36) == r"two \$x\$"
