"""Plan and run the pipeline graph a flow writes as stage calls (see alignflow.pipeline.stage).

The same graph function runs twice. Planned (`plan_pipeline`), every stage call is recorded with
the stages it reads, which gives --only/--from/--refresh, `alignflow stages` and `validate` their
graph. Run (`run_pipeline`), every planned call becomes a Prefect task run submitted to a task
runner with its upstream futures as arguments: Prefect resolves the graph, runs independent stages
side by side (`execution.parallel_stages` worker processes) and records the edges between task
runs. Each stage task computes its cache key from its resolved inputs (their output digests), so
Prefect's own cache serves unchanged stages; a cached result whose files no longer match their
manifest is evicted first and recomputed.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow

from alignflow.errors import USER_ERRORS, PipelineError
from alignflow.pipeline.caching import (
    code_digest,
    evict_cached_result,
    gone_output,
    read_cached_result,
    stage_cache_key,
    verify_manifest,
    write_manifest,
)
from alignflow.pipeline.config import flatten_params, section_digest
from alignflow.pipeline.launcher import job_processes, launched, run_launched
from alignflow.pipeline.seeding import seed_everything
from alignflow.pipeline.stage import ENGINE, Stage, StageOutput, StageResult, StageRun
from alignflow.schemas.config import PipelineConfig
from alignflow.tracking import runs as tracking
from alignflow.tracking.logged_models import log_upstream_models
from alignflow.tracking.report import publish_run_summary

Graph = Callable[[PipelineConfig], Any]  # a flow's body: stage calls on the config (flows/pipeline.py)


# ---------------------------------------------------------------- planning


@dataclass(frozen=True)
class PlannedStage:
    stage: Stage
    section: Any  # its config section, as the graph passes it
    inputs: tuple[str, ...]  # the upstream stages it reads in this pipeline
    mode: str = "run"  # "run" (cache if valid), "refresh" (recompute), "cached" (must come from cache)


class _Placeholder(str):
    """What a stage call returns while planning: the stage's name."""


class _Recorder:
    """The engine while planning: records each configured stage call and what it reads."""

    def __init__(self) -> None:
        self.known: list[str] = []
        self.nodes: dict[str, PlannedStage] = {}
        self.problems: list[str] = []

    def call(self, stage: Stage, section: Any, inputs: dict[str, Any]) -> _Placeholder | None:
        if stage.name in self.known:
            raise PipelineError(f"the pipeline graph calls stage {stage.name} twice; call it once and pass its result on")
        self.known.append(stage.name)
        if section is None:
            return None
        missing = [name for name in stage.inputs if inputs.get(name) is None and name not in stage.optional_inputs]
        self.problems += [f"stages.{stage.name} needs {_section_name(name)}, which is not configured"
                          for name in missing]
        read = tuple(str(value) for value in inputs.values() if value is not None)
        self.nodes[stage.name] = PlannedStage(stage, section, read)
        return _Placeholder(stage.name)


def _section_name(stage: str) -> str:
    return "base_model or stages.pretrain" if stage == "pretrain" else f"stages.{stage}"


def record_graph(graph: Graph, config: PipelineConfig) -> _Recorder:
    recorder = _Recorder()
    token = ENGINE.set(recorder)
    try:
        graph(config)
    finally:
        ENGINE.reset(token)
    return recorder


def active_stages(graph: Graph, config: PipelineConfig) -> list[PlannedStage]:
    """The configured stages in call order (a stage comes after what it reads). A configured stage
    whose upstream stage is not configured is an error naming both: leaving it out would run
    another pipeline than the one the file declares."""
    return _checked(record_graph(graph, config), config)


def _checked(recorder: _Recorder, config: PipelineConfig) -> list[PlannedStage]:
    if recorder.problems:
        raise PipelineError("; ".join(recorder.problems) + " (add the missing section, or remove the stage that "
                            "needs it)")
    for planned in recorder.nodes.values():  # a file a key reads that is missing: one line, before any run
        key_section(planned.stage, planned.section, config)
    return list(recorder.nodes.values())


def _downstream(stages: list[PlannedStage], root: str) -> set[str]:
    found = {root}
    for planned in stages:  # call order is topological
        if any(name in found for name in planned.inputs):
            found.add(planned.stage.name)
    return found


def _upstream(stages: list[PlannedStage], root: str) -> set[str]:
    by_name = {planned.stage.name: planned for planned in stages}
    found, todo = set(), list(by_name[root].inputs)
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(by_name[name].inputs)
    return found


def plan_pipeline(graph: Graph, config: PipelineConfig, *, only: str | None = None, from_stage: str | None = None,
                  refresh: tuple[str, ...] = ()) -> dict[str, PlannedStage]:
    """The stages a run computes or reads, by name, in call order, each with its mode."""
    recorder = record_graph(graph, config)
    stages = _checked(recorder, config)
    names = [planned.stage.name for planned in stages]
    for option, name in [("--only", only), ("--from", from_stage), *[("--refresh", r) for r in refresh]]:
        if name is None:
            continue
        if name not in recorder.known:
            raise PipelineError(f"{option} {name}: unknown stage; stages are {', '.join(recorder.known)}")
        if name not in names:
            raise PipelineError(f"{option} {name}: stage is not configured in this pipeline (no "
                                f"{_section_name(name)} section); configured: {', '.join(names)}")
    forced = set(refresh) | (_downstream(stages, from_stage) if from_stage else set())
    needed = _upstream(stages, only) if only else set()
    plan = {}
    for planned in stages:
        name = planned.stage.name
        if only and name != only:
            if name in needed:
                plan[name] = replace(planned, mode="cached")
            continue
        plan[name] = replace(planned, mode="refresh" if name in forced else "run")
    return plan


# ---------------------------------------------------------------- one stage


def key_section(stage: Stage, section: Any, config: PipelineConfig) -> Any:
    """What besides inputs and code determines `stage`'s output. A stage that loads models also keys
    on where and how (device, dtype, chat template): a bfloat16 GPU run is not the float32 CPU run;
    a launched one on its processes (the global batch is batch_size x processes)."""
    keyed = stage.key(section, config)
    if stage.loads_models:
        from alignflow.models.loading import (
            template_text,  # a template file's text, so an edit changes the key
        )

        keyed = {"section": keyed, "device": config.execution.device, "dtype": config.execution.dtype,
                 "chat_template": template_text(config.chat_template)}
    if launched(stage.base, config):
        execution = config.execution
        accelerate_config = Path(execution.accelerate_config) if execution.accelerate_config else None
        keyed = {"section": keyed, "processes": job_processes(config),
                 "accelerate_config": accelerate_config.read_text() if accelerate_config else None}
    return keyed


def stage_key(stage: Stage, section: Any, config: PipelineConfig, inputs: dict[str, StageResult]) -> str:
    """Cache key of `stage`; `inputs` holds the results of exactly the stages it reads."""
    return stage_cache_key(stage=stage.name, section_digest=section_digest(key_section(stage, section, config)),
                           input_digests={name: result.digest for name, result in inputs.items()},
                           code=code_digest(stage.modules))


def cache_dir(config: PipelineConfig) -> Path:
    return Path(config.cache.dir).resolve()


def lookup(config: PipelineConfig, key: str) -> tuple[StageResult | None, str | None]:
    """(cached result, None) if usable; (None, why not) otherwise."""
    cached, problem = read_cached_result(cache_dir(config), key)
    if cached is None:
        return None, problem
    out_dir = Path(cached.out_dir)
    problem = verify_manifest(out_dir, cached.digest, config.cache.verify) or gone_output(cached.outputs, out_dir)
    return (None, problem) if problem else (cached, None)


def call_stage(stage: Stage, config: PipelineConfig, section: Any, inputs: dict[str, StageResult],
               out_dir: Path) -> StageOutput:
    """The stage's own function, seeded, inside the active MLflow run (here, or in each process of a
    launched job)."""
    seed_everything(config.seed)
    run = StageRun(stage.name, config, section, dict(inputs), out_dir, stage.base)
    try:
        return stage.fn(section, *[inputs.get(name) for name in stage.inputs], run=run)
    except USER_ERRORS as error:
        raise named_by_stage(error, stage) from error


def named_by_stage(error: Exception, stage: Stage) -> Exception:
    """A user error of a stage, its message led by the stage's name (`sft: non-finite training
    loss ...`) unless it already is (most stages' own messages are)."""
    message = str(error)
    if message.startswith((f"{stage.name}:", f"{stage.base}:", f"{stage.name} ", f"{stage.base} ")):
        return error
    return type(error)(f"{stage.name}: {message}")


@dataclass(frozen=True)
class StageCall:
    """What the flow tells a stage's task run besides its section and inputs."""

    config: PipelineConfig
    mode: str
    experiment_id: str
    parent_run_id: str
    device: str | None = None  # the GPU a side-by-side stage was given (replaces execution.device)

    def placed_config(self) -> PipelineConfig:
        if not self.device:
            return self.config
        return self.config.model_copy(update={"execution": self.config.execution.model_copy(
            update={"device": self.device})})


def _unquoted(value: Any) -> Any:
    return value.unquote() if hasattr(value, "unquote") else value


def stage_task_key(context: Any, parameters: dict) -> str:
    """Prefect's cache key of a stage task run, from its resolved inputs. A cached result that is no
    longer usable (files gone or changed) is evicted here, so Prefect recomputes it."""
    stage, call = _unquoted(parameters["stage"]), _unquoted(parameters["call"])
    section, inputs = _unquoted(parameters["section"]), parameters["inputs"]
    try:
        key = stage_key(stage, section, call.config, inputs)
    except Exception:  # noqa: BLE001 - Prefect would run the task uncached; its body raises the error again
        return f"{stage.name}-unkeyed-{uuid.uuid4().hex}"
    reason = "forced" if call.mode == "refresh" else ""
    if call.mode != "refresh":
        cached, problem = lookup(call.config, key)
        if cached is None and problem != "not cached":
            evict_cached_result(cache_dir(call.config), key)
            reason = f"cache invalid: {problem}"
    print(f"[alignflow] {stage.name}: key {key}{' (' + reason + ')' if reason else ''}", flush=True)
    return key


def run_stage_task(stage: Any, section: Any, inputs: dict[str, StageResult], call: Any) -> StageResult:
    """A stage task run's body, reached on a cache miss: a fresh output folder, the stage's MLflow
    child run, the stage function (here or as a launched job), the manifest; the result."""
    stage, section, call = _unquoted(stage), _unquoted(section), _unquoted(call)
    config = call.placed_config()
    key = _task_key(stage, section, call.config, inputs)
    if call.mode == "cached":
        raise PipelineError(f"stage {stage.name} is needed from cache but has no usable cached result (key {key}); "
                            "run the pipeline without --only first")
    out_dir = Path(config.artifacts_dir).resolve() / stage.name / key
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    tracking.setup_tracking(config)
    params = flatten_params(stage.key(section, call.config))
    upstream_runs = {name: result.mlflow_run_id for name, result in inputs.items()}
    run_id = tracking.start_stage_run(call.experiment_id, call.parent_run_id, stage.name, key, upstream_runs)
    started = time.perf_counter()
    with mlflow.start_run(run_id=run_id, nested=True):
        log_upstream_models(run_id, call.experiment_id, [result.mlflow_run_id for result in inputs.values()])
        for start in range(0, len(params), 100):
            mlflow.log_params(dict(list(params.items())[start : start + 100]))
        if launched(stage.base, config):
            from alignflow.models.loading import resolve_placement

            on_gpu = resolve_placement(config.execution.device, config.execution.dtype).device.startswith("cuda")
            output = run_launched(stage, config, section, inputs, out_dir, run_id, on_gpu)
        else:
            output = call_stage(stage, config, section, inputs, out_dir)
        digest = write_manifest(out_dir)
        metrics = {**output.metrics, "stage_seconds": time.perf_counter() - started}
        mlflow.log_metrics(metrics)
        mlflow.set_tag("alignflow.output_digest", digest)
    return stage.result(stage=stage.name, cache_key=key, out_dir=str(out_dir), outputs=output.outputs, digest=digest,
                        metrics=metrics, params=params, summary=output.summary, mlflow_run_id=run_id)


def _task_key(stage: Stage, section: Any, config: PipelineConfig, inputs: dict[str, StageResult]) -> str:
    """The key `stage_task_key` gave this task run (its Prefect transaction holds it), computed again
    only outside Prefect or when the key function failed, so that its error is raised here."""
    from prefect.transactions import get_transaction

    transaction = get_transaction()
    key = transaction.key if transaction is not None else None
    if key and key.startswith(f"{stage.name}-") and "-unkeyed-" not in key:
        return key
    return stage_key(stage, section, config, inputs)


_TASKS: dict[str, Any] = {}


def stage_task(stage: Stage):
    """The Prefect task of `stage` (one per stage name, so the UI names task runs by stage)."""
    if stage.name not in _TASKS:
        from prefect import task

        _TASKS[stage.name] = task(run_stage_task, name=stage.name, cache_key_fn=stage_task_key, persist_result=True,
                                  result_serializer="json")
    return _TASKS[stage.name]


# ---------------------------------------------------------------- the run


def stage_gpus(config: PipelineConfig) -> list[int]:
    """The GPUs side-by-side stages (parallel_stages > 1) spread over: all of them when
    execution.device is auto and there are several, none otherwise (the stages share
    execution.device). One stage at a time needs no spreading, nor torch's import (1.5 s of a
    fully cached run)."""
    if config.execution.device != "auto" or config.execution.parallel_stages == 1:
        return []
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return list(range(count)) if count > 1 else []


def least_busy(gpus: list[int], busy: Counter) -> int:
    """The GPU running the fewest stages (the lowest index among equals)."""
    return min(gpus, key=lambda gpu: (busy[gpu], gpu))


@dataclass
class StageReport:
    stage: str
    status: str  # computed | cached
    seconds: float
    result: StageResult


class PipelineRun(list):
    """The reports of the stages a pipeline run computed or took from cache, in order, plus the id of
    its parent MLflow run (where its config, lineage and report are)."""

    def __init__(self, reports: list[StageReport], parent_run_id: str) -> None:
        super().__init__(reports)
        self.parent_run_id = parent_run_id


@dataclass
class _Submitter:
    """The engine while running: each planned stage call becomes a task run on `runner`."""

    plan: dict[str, PlannedStage]
    config: PipelineConfig
    experiment_id: str
    parent_run_id: str
    runner: Any
    submitted: list[tuple[PlannedStage, Any, float]] = field(default_factory=list)
    futures: dict[str, Any] = field(default_factory=dict)  # by stage name
    gpus: list[int] = field(default_factory=list)
    busy: Counter = field(default_factory=Counter)

    def call(self, stage: Stage, section: Any, inputs: dict[str, Any]) -> Any:
        planned = self.plan.get(stage.name)
        if planned is None:  # not configured, or not needed by --only
            return None
        from prefect.utilities.annotations import quote

        device = None
        if self.gpus and stage.loads_models and not launched(stage.base, self.config):
            gpu = least_busy(self.gpus, self.busy)
            self.busy[gpu] += 1
            device = f"cuda:{gpu}"  # not in the key: any GPU gives the result
        call = StageCall(self.config, planned.mode, self.experiment_id, self.parent_run_id, device)
        task = stage_task(stage).with_options(result_storage=cache_dir(self.config),
                                              refresh_cache=planned.mode == "refresh")
        present = {name: value for name, value in inputs.items() if value is not None}
        future = self.runner.submit(task, parameters={"stage": quote(stage), "section": quote(section),
                                                      "inputs": present, "call": quote(call)})
        if device is not None:
            gpu = int(device.partition(":")[2])
            future.add_done_callback(lambda _: self.busy.subtract([gpu]))
        self.submitted.append((planned, future, time.perf_counter()))
        self.futures[stage.name] = future
        return future

    def reports(self) -> list[StageReport]:
        """Each submitted stage's report, in call order; a stage's error is raised here, and a cache
        hit gets its child run under this pipeline run."""
        reports = []
        for planned, future, submitted in self.submitted:
            future.wait()  # loads the final Prefect state (else it may read PENDING)
            state = future.state
            result = state.result()  # raises the stage's error
            name = planned.stage.name
            if planned.mode == "cached":
                continue
            if state.name == "Cached":
                upstream_runs = {n: self.futures[n].state.result().mlflow_run_id for n in planned.inputs}
                tracking.record_cache_hit(self.experiment_id, self.parent_run_id, result, upstream_runs)
                print(f"[alignflow] {name}: from cache (computed by run {result.mlflow_run_id})", flush=True)
                reports.append(StageReport(name, "cached", 0.0, result))
            else:
                seconds = result.metrics.get("stage_seconds", time.perf_counter() - submitted)
                print(f"[alignflow] {name}: computed in {seconds:.1f}s (run {result.mlflow_run_id})", flush=True)
                reports.append(StageReport(name, "computed", seconds, result))
        return reports


def task_runner(config: PipelineConfig):
    """One worker thread runs the stages in call order; `parallel_stages` > 1 worker processes run
    every stage whose inputs are ready side by side."""
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    workers = config.execution.parallel_stages
    return ProcessPoolTaskRunner(max_workers=workers) if workers > 1 else ThreadPoolTaskRunner(max_workers=1)


def run_pipeline(graph: Graph, config: PipelineConfig, config_path: str, *, only: str | None = None,
                 from_stage: str | None = None, refresh: tuple[str, ...] = (),
                 overrides: tuple[str, ...] = ()) -> PipelineRun:
    """Run `graph` on `config` inside the active Prefect flow run: plan, submit, collect. The
    parent run holds the file as written (config.yaml) and, when command-line overrides changed it,
    the overrides (tag alignflow.overrides) and the config they gave (config_effective.yaml)."""
    from alignflow.pipeline.config import effective_config_text

    plan = plan_pipeline(graph, config, only=only, from_stage=from_stage, refresh=refresh)
    experiment_id = tracking.setup_tracking(config)
    parent_run_id = tracking.start_parent_run(experiment_id, config, config_path)
    client = mlflow.MlflowClient()
    client.log_text(parent_run_id, Path(config_path).read_text(encoding="utf-8"), "config.yaml")
    if overrides:
        client.set_tag(parent_run_id, "alignflow.overrides", " ".join(overrides))
        client.log_text(parent_run_id, effective_config_text(config), "config_effective.yaml")
    ok = False
    try:
        with task_runner(config) as runner:
            submitter = _Submitter(plan, config, experiment_id, parent_run_id, runner, gpus=stage_gpus(config))
            token = ENGINE.set(submitter)
            try:
                graph(config)
            finally:
                ENGINE.reset(token)
            reports = submitter.reports()
        publish_run_summary(parent_run_id)  # lineage.json, lineage.svg and report.html on the parent run
        ok = True
    finally:
        tracking.end_run(parent_run_id, ok)
    return PipelineRun(reports, parent_run_id)
