"""PNG plots for MLflow (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def line_plot(path: Path, title: str, xlabel: str, ylabel: str,
              series: dict[str, list[tuple[float, float]]]) -> Path:
    """One line per series of (x, y) points, saved as PNG at `path`."""
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    for label, points in series.items():
        if points:
            xs, ys = zip(*points, strict=True)
            axis.plot(xs, ys, label=label)
    axis.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axis.grid(alpha=0.3)
    if len(series) > 1:
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def count_panels(path: Path, title: str, panels: dict[str, dict[str, int]]) -> Path:
    """Horizontal bar charts of counts, one panel per named breakdown, saved as PNG."""
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), dpi=100, squeeze=False)
    for axis, (name, counts) in zip(axes[0], panels.items(), strict=True):
        labels = list(counts)[::-1]
        axis.barh(labels, [counts[label] for label in labels], color="#4c72b0")
        axis.set_title(name)
        axis.tick_params(axis="y", labelsize=8)
        if not counts:
            axis.set(xticks=[], yticks=[])
            axis.text(0.5, 0.5, "none", ha="center", va="center", transform=axis.transAxes)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
