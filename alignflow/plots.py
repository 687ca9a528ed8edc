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
