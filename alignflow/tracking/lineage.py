"""Lineage of a run: which stage runs, datasets and models a result came from.

Built only from what MLflow holds (tags `alignflow.upstream_runs`, `alignflow.cached_from`,
`mlflow.parentRunId`, dataset inputs, registered model versions), so it works for any run of any
store, long after the pipeline's own cache is gone.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from alignflow.tracking.logged_models import models_of_run
from alignflow.tracking.runs import TAG_CACHED_FROM, TAG_PIPELINE, TAG_STAGE, TAG_UPSTREAM


class LineageError(LookupError):
    """The run asked for does not exist (or is not an alignflow run) in the store."""


@dataclass(frozen=True)
class DatasetRef:
    name: str
    digest: str
    context: str  # how the stage used it (mlflow.data.context): input, output, train, evaluation, ...


@dataclass(frozen=True)
class ModelRef:
    name: str  # registered model name, or "" for an unregistered `model/` artifact folder
    version: str
    source: str  # models:/<logged model id> (or runs:/<run>/model in stores from before logged models)


@dataclass
class LineageNode:
    stage: str
    run_id: str
    parent_run_id: str | None
    status: str  # "computed" or "cached"
    cached_from: str | None  # the run that computed a cached result
    run_status: str  # MLflow's FINISHED, FAILED, KILLED, RUNNING
    start_time: int
    upstream: dict[str, str]  # stage -> run id, exactly as tagged
    datasets: list[DatasetRef] = field(default_factory=list)
    models: list[ModelRef] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # headline metrics only

    @property
    def computing_run_id(self) -> str:
        """The run holding the artifacts, datasets and models (itself unless cached)."""
        return self.cached_from or self.run_id


@dataclass(frozen=True)
class LineageEdge:
    source: str  # run id of the upstream node
    target: str  # run id of the node that read it
    tagged_run: str  # the run id the tag names (differs from `source` when a cache hit stands in for it)


@dataclass
class LineageGraph:
    root_run_id: str  # the run asked for
    parent_run_id: str | None  # its pipeline run (itself for a pipeline run)
    pipeline: str
    experiment: str
    nodes: list[LineageNode]  # topological: every node after the nodes it read
    edges: list[LineageEdge]

    def node(self, run_id: str) -> LineageNode:
        return next(n for n in self.nodes if n.run_id == run_id)

    def to_json(self) -> dict:
        return {"root_run_id": self.root_run_id, "parent_run_id": self.parent_run_id,
                "pipeline": self.pipeline, "experiment": self.experiment,
                "nodes": [asdict(n) for n in self.nodes],
                "edges": [{"from": e.source, "to": e.target, "tagged_run": e.tagged_run,
                           "from_stage": self.node(e.source).stage, "to_stage": self.node(e.target).stage}
                          for e in self.edges]}


def parse_upstream(tag: str | None) -> dict[str, str]:
    """`stage:run_id,stage:run_id` -> {stage: run_id}; empty or missing -> {}."""
    pairs = [item.split(":", 1) for item in (tag or "").split(",") if item.strip()]
    return {stage.strip(): run.strip() for stage, run in pairs}


# Headline metrics: the numbers a reader of the lineage wants first, in this order of preference.
_HEADLINE_PATTERNS = [r"^heldout_", r"oracle_win_rate", r"^validation_loss$", r"^final_",
                      r"^rows_(kept|train|validation)$", r"^pairs_(train|heldout)$", r"^train_loss$"]
_EVALUATION_ACCURACY = re.compile(r"^[^/.]+\.[^/.]+\.k\d+$")  # evaluate: <model>.<category>.k<k>


def headline_metrics(stage: str, metrics: dict[str, float], limit: int = 4) -> dict[str, float]:
    """A few final metrics per stage; for `evaluate`, every mean accuracy per model, category and k."""
    if stage == "evaluate":
        return {k: metrics[k] for k in sorted(metrics) if _EVALUATION_ACCURACY.match(k)}
    chosen: dict[str, float] = {}
    for pattern in _HEADLINE_PATTERNS:
        for key in sorted(metrics):
            if len(chosen) < limit and key not in chosen and re.search(pattern, key):
                chosen[key] = metrics[key]
    return chosen


def _get_run(client: MlflowClient, run_id: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException as error:
        raise LineageError(f"run {run_id} not found in the MLflow store {client.tracking_uri}") from error


def child_runs(client: MlflowClient, parent: Run) -> list[Run]:
    """The stage runs of a pipeline run, oldest first."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent.info.run_id}'",
                                  order_by=["attributes.start_time ASC"], page_token=token)
        runs += [run for run in page if TAG_STAGE in run.data.tags]
        token = page.token
        if not token:
            return runs


def _datasets(run: Run) -> list[DatasetRef]:
    inputs = run.inputs.dataset_inputs if run.inputs else []
    return [DatasetRef(item.dataset.name, item.dataset.digest,
                       next((t.value for t in item.tags if t.key == "mlflow.data.context"), ""))
            for item in inputs]


def _models(client: MlflowClient, run: Run) -> list[ModelRef]:
    """Registered versions made from the run, then its logged models that no version points at
    (sweep points, unregistered stages); a store from before logged models: its `model/` folder."""
    versions = client.search_model_versions(f"run_id = '{run.info.run_id}'")
    versions = sorted(versions, key=lambda v: (v.name, int(v.version)))
    models = [ModelRef(v.name, str(v.version), v.source) for v in versions]
    registered = {v.source for v in versions}
    logged = models_of_run(run.info.run_id, run.info.experiment_id, client)
    models += [ModelRef("", "", f"models:/{m.model_id}") for m in logged if f"models:/{m.model_id}" not in registered]
    if not models and any(a.path == "model" and a.is_dir for a in client.list_artifacts(run.info.run_id)):
        models.append(ModelRef("", "", f"runs:/{run.info.run_id}/model"))
    return models


def _node(client: MlflowClient, run: Run) -> LineageNode:
    tags = run.data.tags
    if TAG_STAGE not in tags:
        raise LineageError(f"run {run.info.run_id} is neither an alignflow stage run nor a pipeline run "
                           f"(no {TAG_STAGE} tag)")
    cached_from = tags.get(TAG_CACHED_FROM) or None
    computing = run
    if cached_from:
        try:  # a cache hit holds copies of params and metrics only; datasets and models stay with the source
            computing = client.get_run(cached_from)
        except MlflowException:
            computing = run
    stage = tags[TAG_STAGE]
    return LineageNode(stage=stage, run_id=run.info.run_id, parent_run_id=tags.get(MLFLOW_PARENT_RUN_ID),
                       status="cached" if cached_from else "computed", cached_from=cached_from,
                       run_status=run.info.status, start_time=run.info.start_time or 0,
                       upstream=parse_upstream(tags.get(TAG_UPSTREAM)), datasets=_datasets(computing),
                       models=_models(client, computing),
                       metrics=headline_metrics(stage, run.data.metrics))


def _topological(nodes: dict[str, LineageNode], edges: list[LineageEdge]) -> list[LineageNode]:
    """Kahn's algorithm; among ready nodes, the one that started first comes first."""
    waiting = {run_id: {e.source for e in edges if e.target == run_id} for run_id in nodes}
    ordered: list[LineageNode] = []
    while waiting:
        ready = [nodes[r] for r, sources in waiting.items() if not sources] or [nodes[r] for r in waiting]
        first = min(ready, key=lambda n: (n.start_time, n.run_id))
        ordered.append(first)
        del waiting[first.run_id]
        for sources in waiting.values():
            sources.discard(first.run_id)
    return ordered


def build_lineage(client: MlflowClient, run_id: str) -> LineageGraph:
    """The upstream graph of a stage run, or of every stage run of a pipeline run.

    For a pipeline run, an upstream tag naming the run that computed one of its cache hits is
    drawn from that cache hit, so the graph stays within the pipeline run where it can.
    """
    root = _get_run(client, run_id)
    is_pipeline = TAG_STAGE not in root.data.tags
    if is_pipeline and TAG_PIPELINE not in root.data.tags:
        raise LineageError(f"run {run_id} is neither an alignflow stage run nor a pipeline run "
                           f"(no {TAG_STAGE} or {TAG_PIPELINE} tag)")
    seeds = child_runs(client, root) if is_pipeline else [root]
    parent_id = run_id if is_pipeline else root.data.tags.get(MLFLOW_PARENT_RUN_ID)
    nodes = {run.info.run_id: _node(client, run) for run in seeds}
    stand_in = {n.cached_from: n.run_id for n in nodes.values() if n.cached_from} if is_pipeline else {}
    edges: list[LineageEdge] = []
    todo = list(nodes)
    while todo:
        node = nodes[todo.pop(0)]
        for tagged in node.upstream.values():
            source = stand_in.get(tagged, tagged)
            if source not in nodes:
                nodes[source] = _node(client, _get_run(client, source))
                todo.append(source)
            edges.append(LineageEdge(source, node.run_id, tagged))
    parent = _get_run(client, parent_id) if parent_id and parent_id != run_id else root
    experiment = client.get_experiment(root.info.experiment_id).name
    ordered = _topological(nodes, edges)
    edges.sort(key=lambda e: (ordered.index(nodes[e.target]), ordered.index(nodes[e.source])))
    return LineageGraph(root_run_id=run_id, parent_run_id=parent_id,
                        pipeline=parent.data.tags.get(TAG_PIPELINE, ""), experiment=experiment, nodes=ordered,
                        edges=edges)


def _status_text(node: LineageNode) -> str:
    text = f"cached, computed by run {node.cached_from}" if node.cached_from else "computed"
    return text if node.run_status == "FINISHED" else f"{text} [{node.run_status}]"


def format_lineage(graph: LineageGraph) -> str:
    """Upstream first: each stage run with what it read, its datasets, its model and its headline metrics."""
    root = next((n for n in graph.nodes if n.run_id == graph.root_run_id), None)
    what = f"stage {root.stage}" if root else "pipeline run"
    lines = [f"Lineage of run {graph.root_run_id} ({what}, pipeline {graph.pipeline or '?'}, "
             f"experiment {graph.experiment})",
             f"{len(graph.nodes)} stage runs, upstream first: datasets -> models -> evaluations", ""]
    width = max((len(n.stage) for n in graph.nodes), default=0) + 2
    for node in graph.nodes:
        same_run = node.parent_run_id == graph.parent_run_id
        elsewhere = "" if same_run else f" (pipeline run {node.parent_run_id})"
        lines.append(f"{node.stage:<{width}}run {node.run_id}  {_status_text(node)}{elsewhere}")
        indent = " " * width
        if node.upstream:
            reads = ", ".join(f"{stage} {run}" for stage, run in sorted(node.upstream.items()))
            lines.append(f"{indent}reads    {reads}")
        for dataset in node.datasets:
            lines.append(f"{indent}dataset  {dataset.name}  digest {dataset.digest}  ({dataset.context})")
        for model in node.models:
            name = f"{model.name} version {model.version}" if model.name else "unregistered"
            lines.append(f"{indent}model    {name}  {model.source}")
        if node.metrics:
            values = [f"{k}={v:.4g}" for k, v in node.metrics.items()]
            for start in range(0, len(values), 4):
                label = "metrics" if start == 0 else ""
                lines.append(f"{indent}{label:<9}" + ", ".join(values[start:start + 4]))
    return "\n".join(lines)
