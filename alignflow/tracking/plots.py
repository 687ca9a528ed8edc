"""PNG plots for MLflow (matplotlib, headless)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

# Chinese task names and labels: the first of these that is installed draws them. Noto Sans CJK SC
# comes with the `mplfonts` package (a dependency, from PyPI), so a plain install has it; a system
# font (Debian: fonts-noto-cjk) works too.
CJK_FONTS = ["Noto Sans CJK SC", "Noto Sans CJK JP", "WenQuanYi Zen Hei", "SimHei", "Microsoft YaHei"]
BUNDLED_CJK_FONT = "NotoSansCJKsc-Regular.otf"


def bundled_cjk_font() -> Path | None:
    """The Simplified Chinese font file mplfonts ships, found without importing the package (its
    import pulls a command-line framework); None when it is not installed."""
    from importlib.util import find_spec

    spec = find_spec("mplfonts")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "fonts" / BUNDLED_CJK_FONT
        if candidate.is_file():
            return candidate
    return None


@cache
def _pyplot():
    """matplotlib.pyplot, headless, imported on the first plot: importing it costs every CLI command
    about a second at start-up. Latin text keeps DejaVu Sans; CJK characters fall back to the CJK font."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    bundled = bundled_cjk_font()
    if bundled is not None:
        font_manager.fontManager.addfont(str(bundled))
    installed = {font.name for font in font_manager.fontManager.ttflist}
    # Named fonts, not the generic "sans-serif": matplotlib falls back glyph by glyph only along a
    # list of font names (a generic family resolves to one font, and CJK text drew as boxes).
    plt.rcParams["font.family"] = ["DejaVu Sans", *[f for f in CJK_FONTS if f in installed]]
    return plt


def line_plot(path: Path, title: str, xlabel: str, ylabel: str,
              series: dict[str, list[tuple[float, float]]]) -> Path:
    """One line per series of (x, y) points, saved as PNG at `path`."""
    plt = _pyplot()
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
    plt = _pyplot()
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


def accuracy_vs_k(path: Path, title: str, series: dict[str, list[tuple[int, float, float, float]]],
                  chance: dict[str, float] | None = None) -> Path:
    """Accuracy against k (symlog x axis), one line per series of (k, accuracy, ci_low, ci_high),
    with its confidence band; dotted lines mark chance where given."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=100)
    for label, points in series.items():
        points = sorted(points)
        ks, accs, lows, highs = zip(*points, strict=True)
        line, = axis.plot(ks, accs, marker="o", label=label)
        axis.fill_between(ks, lows, highs, alpha=0.15, color=line.get_color())
        if chance and label in chance:
            axis.axhline(chance[label], linestyle=":", linewidth=1, color=line.get_color())
    axis.set_xscale("symlog", linthresh=1)
    axis.set(title=title, xlabel="demonstrations k", ylabel="accuracy", ylim=(-0.02, 1.02))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def heatmap(path: Path, title: str, rows: list[str], columns: list[str], values: list[list[float]]) -> Path:
    """A rows x columns grid of values in [0, 1], each cell annotated."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4.5 + 0.6 * len(columns), 1.5 + 0.35 * len(rows)), dpi=100)
    image = axis.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axis.set_xticks(range(len(columns)), columns)
    axis.set_yticks(range(len(rows)), rows, fontsize=7)
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if value < 0.6 else "black")
    axis.set_title(title)
    figure.colorbar(image, ax=axis, fraction=0.04)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def histogram(path: Path, title: str, xlabel: str, values: list[float], bins: int = 30) -> Path:
    """Histogram of `values` with a line at zero (e.g. chosen-minus-rejected reward margins), as PNG."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    axis.hist(values, bins=bins, color="#4c72b0", alpha=0.85)
    axis.axvline(0.0, color="black", linewidth=1)
    axis.set(title=title, xlabel=xlabel, ylabel="count")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _spans(values: list[tuple[float, tuple[float, float] | None]]):
    """matplotlib's yerr (distances below and above) of values with optional intervals; None: no bars."""
    if all(interval is None for _, interval in values):
        return None
    return [[value - interval[0] if interval else 0.0 for value, interval in values],
            [interval[1] - value if interval else 0.0 for value, interval in values]]


def frontier_plot(path: Path, points: list) -> Path:
    """Held-out reward gain over SFT and oracle win rate against SFT, each against KL to SFT: one
    line per method through its sweep points (alignflow.evaluation.comparisons.FrontierPoint), with
    their intervals as error bars."""
    plt = _pyplot()
    figure, (reward_axis, win_axis) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for method in sorted({p.method for p in points}):
        mine = sorted((p for p in points if p.method == method), key=lambda p: p.kl_to_sft)
        kls = [p.kl_to_sft for p in mine]
        reward_axis.errorbar(kls, [p.reward_gain for p in mine], yerr=_spans([(p.reward_gain, p.reward_gain_ci)
                                                                                for p in mine]),
                             marker="o", capsize=3, label=method)
        wins = [p for p in mine if p.win_rate is not None]
        if wins:
            win_axis.errorbar([p.kl_to_sft for p in wins], [p.win_rate for p in wins],
                              yerr=_spans([(p.win_rate, p.win_rate_ci) for p in wins]), marker="o", capsize=3,
                              label=method)
    reward_axis.axhline(0, color="#888", linewidth=0.8)
    win_axis.axhline(0.5, color="#888", linewidth=0.8)
    reward_axis.set(title="Held-out reward gain over SFT", xlabel="KL to SFT (nats per response)",
                    ylabel="reward-model score − SFT's")
    win_axis.set(title="Oracle win rate against SFT", xlabel="KL to SFT (nats per response)", ylabel="win rate")
    for axis in (reward_axis, win_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def icl_scaling_plot(path: Path, curves: list) -> Path:
    """Accuracy against k, one panel per task and one line per base model (its size in the legend),
    with interval bands and chance dotted: in-context learning against model size
    (alignflow.evaluation.icl_scaling.Curve)."""
    from alignflow.evaluation.icl_scaling import curve_label

    plt = _pyplot()
    tasks = list(dict.fromkeys(c.task for c in curves))
    columns = min(3, len(tasks))
    rows = -(-len(tasks) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), dpi=100, squeeze=False)
    for axis, task in zip(axes.flat, tasks, strict=False):
        mine = [c for c in curves if c.task == task]
        for curve in mine:
            ks, accs, lows, highs = zip(*curve.points, strict=True)
            line, = axis.plot(ks, accs, marker="o", markersize=3, label=curve_label(curve))
            axis.fill_between(ks, lows, highs, alpha=0.12, color=line.get_color())
        if mine[0].chance is not None:
            axis.axhline(mine[0].chance, linestyle=":", linewidth=1, color="#555")
        axis.set_xscale("symlog", linthresh=1)
        largest = max(point[0] for curve in mine for point in curve.points)
        axis.set(title=f"{task} ({mine[0].category})", xlabel="demonstrations k", ylabel="accuracy",
                 ylim=(-0.02, 1.02), xlim=(0, max(1, largest) * 1.15))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6, loc="best")
    for axis in list(axes.flat)[len(tasks):]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
