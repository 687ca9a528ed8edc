"""One self-contained HTML report per pipeline run, logged beside its lineage on the parent run.

The page has inline CSS, images as base64 data URIs and no script, so it opens the same from a
file, from a mail attachment or inside the MLflow UI's artifact viewer (a sandboxed iframe).
Everything on it is read back from MLflow, the record a later reader also has.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from mlflow.entities import FileInfo
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from alignflow.tracking.lineage import LineageGraph, LineageNode, build_lineage
from alignflow.tracking.lineage_picture import lineage_svg

MAX_TABLE_ROWS = 10
MAX_RECORDS_PER_FILE = 4
MAX_CELL_CHARS = 240
MAX_ARTIFACT_BYTES = 5_000_000  # bigger tables are named, not embedded
SKIPPED_FOLDERS = {"model", "checkpoints"}
# evaluate's per-sample records: the columns a reader needs to judge a prediction
SAMPLE_RECORD_COLUMNS = ("model", "task", "k", "prompt", "target", "prediction", "acc")


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list]
    total_rows: int


@dataclass(frozen=True)
class Plot:
    title: str
    png: bytes


@dataclass
class StageSection:
    node: LineageNode
    seconds: float | None  # metric stage_seconds: for a cache hit, the time it took when computed
    metrics: dict[str, float]
    plots: list[Plot] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # artifacts too large to embed


def artifact_files(repository: ArtifactRepository, path: str | None = None) -> list[FileInfo]:
    """Every file a run logged, model folders and checkpoints left out."""
    files: list[FileInfo] = []
    for info in repository.list_artifacts(path):
        if info.is_dir:
            if info.path.rsplit("/", 1)[-1] not in SKIPPED_FOLDERS:
                files += artifact_files(repository, info.path)
        else:
            files.append(info)
    return files


def read_table(path: Path, title: str) -> Table | None:
    """An MLflow table (`log_table` JSON) or a JSONL file of records; None for any other file."""
    if path.suffix == ".jsonl":
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        records = [json.loads(line) for line in lines[:MAX_RECORDS_PER_FILE]]
        if not records or not all(isinstance(r, dict) for r in records):
            return None
        columns = [c for c in SAMPLE_RECORD_COLUMNS if c in records[0]] or list(records[0])
        return Table(title, columns, [[r.get(c) for c in columns] for r in records], len(lines))
    content = json.loads(path.read_text(encoding="utf-8"))
    if not (isinstance(content, dict) and set(content) == {"columns", "data"} and content["data"]):
        return None
    rows = content["data"]
    return Table(title, [str(c) for c in content["columns"]], rows[:MAX_TABLE_ROWS], len(rows))


@contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No MLflow progress bar per file: a report downloads dozens of small files into the run's log."""
    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous


def collect_stage(client: MlflowClient, node: LineageNode, workdir: Path) -> StageSection:
    """Final metrics of the stage run; plots and tables of the run that computed it."""
    metrics = client.get_run(node.run_id).data.metrics
    section = StageSection(node, metrics.get("stage_seconds"), dict(sorted(metrics.items())))
    # The run's own artifact repository: `runs:/` URIs would look the run up again for every file.
    repository = get_artifact_repository(client.get_run(node.computing_run_id).info.artifact_uri)
    workdir.mkdir(parents=True, exist_ok=True)
    for info in artifact_files(repository):
        suffix = Path(info.path).suffix
        if suffix not in (".png", ".json", ".jsonl"):
            continue
        if (info.file_size or 0) > MAX_ARTIFACT_BYTES:
            section.skipped.append(info.path)
            continue
        with _quiet_downloads():
            local = Path(repository.download_artifacts(info.path, str(workdir)))
        if suffix == ".png":
            section.plots.append(Plot(info.path, local.read_bytes()))
        elif (table := read_table(local, info.path)) is not None:
            section.tables.append(table)
    return section


def format_cell(value: object) -> str:
    """Numbers to 4 significant digits, lists and dicts as JSON, long text cut at MAX_CELL_CHARS."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS] + "…"


def _cell(value: object) -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    css = ' class="num"' if numeric else ""
    return f"<td{css}>{escape(format_cell(value))}</td>"


def html_table(columns: list[str], rows: list[list], caption: str = "") -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    caption = f"<caption>{escape(caption)}</caption>" if caption else ""
    return (f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def metrics_table(metrics: dict[str, float]) -> str:
    """Name/value pairs, three pairs to a row when there are many, so long lists stay short."""
    per_row = 3 if len(metrics) > 12 else 1
    items = list(metrics.items())
    rows = [sum(([k, v] for k, v in items[i:i + per_row]), []) for i in range(0, len(items), per_row)]
    rows = [row + [None] * (2 * per_row - len(row)) for row in rows]
    return html_table(["metric", "value"] * per_row, rows)


def _image(data: bytes, mime: str, alt: str, css_class: str = "") -> str:
    source = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return f'<img class="{css_class}" src="{source}" alt="{escape(alt)}">'


def _status(node: LineageNode) -> str:
    return f'<span class="status-{escape(node.status)}">{escape(node.status)}</span>'


def _summary(sections: list[StageSection]) -> str:
    head = ["stage", "status", "seconds", "run id", "computed by", "headline metrics"]
    rows = "".join(
        f'<tr><td><a href="#stage-{escape(s.node.stage)}">{escape(s.node.stage)}</a></td>'
        f"<td>{_status(s.node)}</td>"
        f'{_cell(s.seconds)}<td><code>{escape(s.node.run_id)}</code></td>'
        f'<td><code>{escape(s.node.cached_from or "this run")}</code></td>'
        f'<td>{escape(", ".join(f"{k}={v:.4g}" for k, v in list(s.node.metrics.items())[:4]))}</td></tr>'
        for s in sections)
    return (f'<div class="scroll"><table><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>'
            f"<tbody>{rows}</tbody></table></div>"
            '<p class="note">seconds: metric <code>stage_seconds</code>; a cached stage shows the time it '
            "took when it was computed.</p>")


def _lineage(graph: LineageGraph, svg: str) -> str:
    stage_of = {n.run_id: n.stage for n in graph.nodes}
    edges = [[stage_of[e.source], e.source, stage_of[e.target], e.target,
              "" if e.tagged_run == e.source else f"cache hit of {e.tagged_run}"] for e in graph.edges]
    datasets = [[n.stage, d.name, d.digest, d.context] for n in graph.nodes for d in n.datasets]
    models = [[n.stage, m.name or "(not registered)", m.version, m.source]
              for n in graph.nodes for m in n.models]
    parts = ['<div class="scroll">' + _image(svg.encode("utf-8"), "image/svg+xml", "lineage graph", "lineage")
             + "</div>"]
    if edges:
        parts.append("<h3>Edges (upstream run → run that read it)</h3>"
                     + html_table(["from stage", "from run", "to stage", "to run", "note"], edges))
    if datasets:
        parts.append("<h3>Datasets</h3>" + html_table(["stage", "dataset", "digest", "context"], datasets))
    if models:
        parts.append("<h3>Models</h3>"
                     + html_table(["stage", "registered model", "version", "source"], models))
    return "".join(parts)


def _stage(section: StageSection) -> str:
    node = section.node
    origin = ""
    if node.cached_from:
        origin = f" — cached, computed by run <code>{escape(node.cached_from)}</code>"
    parts = [f'<section id="stage-{escape(node.stage)}"><h2>{escape(node.stage)}</h2>'
             f"<p>{_status(node)} run <code>{escape(node.run_id)}</code>{origin}</p>"]
    parts.append(metrics_table(section.metrics) if section.metrics else "<p>No metrics logged.</p>")
    if section.plots:
        parts.append("<h3>Plots</h3>" + "".join(
            f"<figure>{_image(p.png, 'image/png', p.title)}"
            f"<figcaption>{escape(p.title)}</figcaption></figure>"
            for p in section.plots))
    if section.tables:
        parts.append("<h3>Samples and tables</h3>")
        for table in section.tables:
            cut = len(table.rows) < table.total_rows
            shown = f" (first {len(table.rows)} of {table.total_rows} rows)" if cut else ""
            parts.append(html_table(table.columns, table.rows, caption=table.title + shown))
    if section.skipped:
        parts.append(f"<p class=\"note\">Not embedded (over {MAX_ARTIFACT_BYTES // 1_000_000} MB): "
                     + ", ".join(f"<code>{escape(p)}</code>" for p in section.skipped) + "</p>")
    return "".join(parts) + "</section>"


STYLE = """
body{font-family:system-ui,"Segoe UI","Noto Sans CJK SC","PingFang SC","Microsoft YaHei",sans-serif;
 margin:0 auto;max-width:1200px;padding:1.5rem;color:#222;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
h3{font-size:1rem;margin:1rem 0 .3rem} .meta{color:#555;margin-top:0} .note{color:#666;font-size:.8rem}
table{border-collapse:collapse;margin:.4rem 0 1rem;font-size:.82rem}
caption{text-align:left;font-weight:600;padding:.2rem 0;font-family:ui-monospace,"DejaVu Sans Mono",monospace}
th,td{border:1px solid #d8d8d8;padding:.2rem .5rem;text-align:left;vertical-align:top}
th{background:#f2f3f5} td{white-space:pre-wrap;word-break:break-word;max-width:30rem}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.status-computed{color:#2e7d32;font-weight:600} .status-cached{color:#1f5fae;font-weight:600}
figure{display:inline-block;margin:.4rem 1rem .4rem 0;vertical-align:top}
figure img{max-width:540px;height:auto;border:1px solid #eee} figcaption{font-size:.78rem;color:#555}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.85em}
.scroll{overflow-x:auto} img.lineage{border:1px solid #eee} nav a{margin-right:.7rem}
pre.config{background:#f7f7f9;border:1px solid #e3e3e3;padding:.6rem;overflow-x:auto;font-size:.8rem}
"""


def _with_interval(value: float | None, interval: tuple[float, float] | None) -> str | float | None:
    if value is None or interval is None:
        return value
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _frontier(frontier: Frontier) -> str:
    rows = [[p.method, p.stage, p.kl_to_sft, _with_interval(p.reward_gain, p.reward_gain_ci),
             _with_interval(p.win_rate, p.win_rate_ci)] for p in frontier.points]
    return ('<section id="frontier"><h2>Reward–KL frontier</h2>'
            f"<figure>{_image(frontier.png, 'image/png', 'reward-KL frontier')}"
            "<figcaption>Each preference method's policies (the configured one and its sweep points) against "
            "the SFT policy on held-out prompts: reward-model score gained, oracle win rate, KL to SFT; "
            "[95% intervals over the prompts]."
            "</figcaption></figure>"
            + html_table(["method", "stage", "KL to SFT", "reward gain", "oracle win rate"], rows) + "</section>")


@dataclass(frozen=True)
class Frontier:
    points: list  # alignflow.evaluation.comparisons.FrontierPoint
    png: bytes


@dataclass(frozen=True)
class IclScaling:
    curves: list  # alignflow.evaluation.icl_scaling.Curve
    png: bytes


def _icl_scaling(scaling: IclScaling) -> str:
    from alignflow.evaluation.icl_scaling import curve_label

    shots = sorted({point[0] for curve in scaling.curves for point in curve.points})
    rows = []
    for curve in scaling.curves:
        by_k = {point[0]: point for point in curve.points}
        rows.append([curve.task, curve_label(curve),
                     *[_with_interval(by_k[k][1], by_k[k][2:]) if k in by_k else None for k in shots]])
    return ('<section id="icl-scaling"><h2>In-context learning against model size</h2>'
            f"<figure>{_image(scaling.png, 'image/png', 'in-context learning against model size')}"
            "<figcaption>Each base model (the configured one and the pretrain sweep points) scored on the "
            "recognition and learning tasks: accuracy against the number of demonstrations k, [95% Wilson "
            "intervals]; chance dotted.</figcaption></figure>"
            + html_table(["task", "base model", *[f"k={k}" for k in shots]], rows) + "</section>")


def render_report(graph: LineageGraph, svg: str, sections: list[StageSection], *, started: str,
                  config_text: str | None, frontier: Frontier | None = None,
                  icl_scaling: IclScaling | None = None) -> str:
    """The HTML page (a pure function of what was collected, so it can be tested without a store)."""
    title = f"alignflow report: {graph.pipeline or 'pipeline'} run {graph.parent_run_id}"
    nav = "".join(f'<a href="#stage-{escape(s.node.stage)}">{escape(s.node.stage)}</a>' for s in sections)
    computed = sum(s.node.status == "computed" for s in sections)
    body = [f"<h1>alignflow report: {escape(graph.pipeline or 'pipeline')}</h1>",
            f'<p class="meta">pipeline run <code>{escape(str(graph.parent_run_id))}</code> · experiment '
            f"{escape(graph.experiment)} · started {escape(started)} · {len(sections)} stages "
            f"({computed} computed, {len(sections) - computed} cached)</p>",
            f'<nav><a href="#summary">summary</a><a href="#lineage">lineage</a>'
            f'{"<a href=#frontier>frontier</a>" if frontier else ""}'
            f'{"<a href=#icl-scaling>ICL against size</a>" if icl_scaling else ""}{nav}</nav>',
            '<section id="summary"><h2>Stages</h2>',
            _summary(sections) if sections else "<p>No stage ran.</p>",
            "</section>", '<section id="lineage"><h2>Lineage</h2>', _lineage(graph, svg), "</section>",
            *([_frontier(frontier)] if frontier else []),
            *([_icl_scaling(icl_scaling)] if icl_scaling else []),
            *[_stage(s) for s in sections]]
    if config_text:
        body.append('<section id="config"><h2>Configuration</h2>'
                    "<details><summary>config.yaml of this run</summary>"
                    f'<pre class="config">{escape(config_text)}</pre></details></section>')
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>{escape(title)}</title><style>{STYLE}</style></head>'
            "<body>" + "\n".join(body) + "</body></html>\n")


def build_report(client: MlflowClient, parent_run_id: str, graph: LineageGraph, svg: str) -> str:
    """The report of a pipeline run; its reward-KL frontier (when any policy was measured against SFT)
    is also logged on the run as frontier.png and frontier.json."""
    parent = client.get_run(parent_run_id)
    started = datetime.fromtimestamp((parent.info.start_time or 0) / 1000, tz=UTC)
    started_text = started.strftime("%Y-%m-%d %H:%M UTC")
    stages = [n for n in graph.nodes if n.parent_run_id == parent_run_id]
    with tempfile.TemporaryDirectory(prefix="alignflow-report-") as workdir:
        sections = [collect_stage(client, node, Path(workdir) / node.run_id) for node in stages]
        frontier = publish_frontier(client, parent_run_id, sections, Path(workdir))
        icl_scaling = publish_icl_scaling(client, parent_run_id, graph, sections, Path(workdir))
        has_config = any(f.path == "config.yaml" for f in client.list_artifacts(parent_run_id))
        with _quiet_downloads():
            config_text = Path(client.download_artifacts(parent_run_id, "config.yaml", workdir)).read_text(
                encoding="utf-8") if has_config else None
    return render_report(graph, svg, sections, started=started_text, config_text=config_text, frontier=frontier,
                         icl_scaling=icl_scaling)


def publish_frontier(client: MlflowClient, parent_run_id: str, sections: list[StageSection],
                     workdir: Path) -> Frontier | None:
    from alignflow.evaluation.comparisons import frontier_points
    from alignflow.tracking.plots import frontier_plot

    points = frontier_points([(s.node.stage, s.metrics) for s in sections])
    if not points:
        return None
    png = frontier_plot(workdir / "frontier.png", points)
    client.log_artifact(parent_run_id, str(png))
    client.log_text(parent_run_id, json.dumps([asdict(p) for p in points], indent=1), "frontier.json")
    return Frontier(points, png.read_bytes())


def publish_icl_scaling(client: MlflowClient, parent_run_id: str, graph: LineageGraph,
                        sections: list[StageSection], workdir: Path) -> IclScaling | None:
    """With pretrain sweep points, the accuracy-against-k curves of every base model on the ICL tasks
    (icl_scaling.png and icl_scaling.json on the run); None without them."""
    import pandas as pd

    from alignflow.evaluation.icl_scaling import icl_curves
    from alignflow.tracking.plots import icl_scaling_plot

    nodes = {node.run_id: node for node in graph.nodes}
    runs = []
    for section in sections:
        node = section.node
        base = nodes.get(node.upstream.get("pretrain", ""))
        if node.stage.split("-", 1)[0] != "evaluate" or base is None:
            continue
        with _quiet_downloads():
            table = Path(client.download_artifacts(node.computing_run_id, "results.csv", str(workdir / node.run_id)))
        parameters = client.get_run(base.computing_run_id).data.params.get("n_parameters")
        runs.append((base.stage, int(parameters) if parameters else None,
                     pd.read_csv(table).to_dict("records")))
    curves = icl_curves(runs)
    if len({curve.model for curve in curves}) < 2:
        return None
    png = icl_scaling_plot(workdir / "icl_scaling.png", curves)
    client.log_artifact(parent_run_id, str(png))
    client.log_text(parent_run_id, json.dumps([asdict(c) for c in curves], indent=1), "icl_scaling.json")
    return IclScaling(curves, png.read_bytes())


def publish_run_summary(parent_run_id: str, client: MlflowClient | None = None) -> None:
    """Log `lineage.json`, `lineage.svg` and `report.html` on a pipeline run (the current tracking store)."""
    client = client or MlflowClient()
    graph = build_lineage(client, parent_run_id)
    svg = lineage_svg(graph)
    client.log_text(parent_run_id, json.dumps(graph.to_json(), ensure_ascii=False, indent=1), "lineage.json")
    client.log_text(parent_run_id, svg, "lineage.svg")
    client.log_text(parent_run_id, build_report(client, parent_run_id, graph, svg), "report.html")
