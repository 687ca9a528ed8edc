"""Plots draw the Chinese task names and labels with a CJK font (the one mplfonts ships), not as
the missing-glyph boxes DejaVu Sans alone gives them."""

from __future__ import annotations

import warnings

import numpy as np

from alignflow.tracking.plots import _pyplot, bundled_cjk_font, line_plot


def render(text: str, family: str | None = None) -> np.ndarray:
    """`text` drawn in the plots' fonts (family None) or in `family` alone."""
    plt = _pyplot()
    figure = plt.figure(figsize=(1.5, 1), dpi=40)
    figure.text(0.05, 0.3, text, fontsize=28, **({"family": family} if family else {}))
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba()).copy()
    plt.close(figure)
    return pixels


def missing_glyph_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def test_chinese_text_renders_with_glyphs_not_boxes():
    assert bundled_cjk_font() is not None, "mplfonts (a dependency) ships the font"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sentiment, topic = render("情感"), render("类别")
    assert missing_glyph_warnings(caught) == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        boxes, other_boxes = render("情感", "DejaVu Sans"), render("类别", "DejaVu Sans")
    assert missing_glyph_warnings(caught), "DejaVu Sans alone has no CJK glyphs: the control"
    assert np.array_equal(boxes, other_boxes), "missing glyphs all draw the same box"
    assert not np.array_equal(sentiment, topic), "real glyphs differ from character to character"
    assert not np.array_equal(sentiment, boxes)


def test_a_plot_with_a_chinese_title_and_legend_has_every_glyph(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line_plot(tmp_path / "plot.png", "准确率：instruct_sentiment_zh", "示例数 k", "准确率",
                  {"情感": [(0, 0.5), (4, 0.9)], "主题": [(0, 0.4), (4, 0.8)]})
    assert missing_glyph_warnings(caught) == []
    assert (tmp_path / "plot.png").read_bytes().startswith(b"\x89PNG")
