"""Plan and execute stages: cache lookups, forced recomputation, MLflow runs, manifests.

`execute_stage` is what a stage's Prefect task calls; `run_pipeline` is what a flow calls.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow

from alignflow import tracking
from alignflow.caching import (
    code_digest,
    read_cached_result,
    stage_cache_key,
    verify_manifest,
    write_manifest,
)
from alignflow.config import flatten_params, section_digest
from alignflow.errors import PipelineError
from alignflow.launcher import job_processes, launched, run_launched
from alignflow.report import publish_run_summary
from alignflow.schemas.config import PipelineConfig
from alignflow.seeding import seed_everything
from alignflow.stage import Stage, StageContext, StageOutput


@dataclass(frozen=True)
class PlannedStage:
    stage: Stage
    task: Any  # the stage's Prefect task
    mode: str  # "run" (cache if valid), "refresh" (recompute), "cached" (must come from cache)


def active_stages(registry: list[tuple[Stage, Any]], config: PipelineConfig) -> list[tuple[Stage, Any]]:
    """The configured stages, in order.

    A configured stage whose upstream stage is not configured is an error naming both: leaving it
    out would run another pipeline than the one the file declares.
    """
    active = [(stage, task) for stage, task in registry if stage.section(config) is not None]
    names = {stage.name for stage, _ in active}
    problems = [f"stages.{stage.name} needs {_section_name(upstream)}, which is not configured"
                for stage, _ in active for upstream in stage.upstream if upstream not in names]
    if problems:
        raise PipelineError("; ".join(problems) + " (add the missing section, or remove the stage that needs it)")
    return active


def _section_name(stage: str) -> str:
    return "base_model or stages.pretrain" if stage == "pretrain" else f"stages.{stage}"


def _downstream(stages: list[Stage], root: str) -> set[str]:
    active = {s.name for s in stages}
    found = {root}
    for stage in stages:  # registry order is topological
        if any(u in found for u in stage.inputs(active)):
            found.add(stage.name)
    return found


def _upstream(stages: list[Stage], root: str) -> set[str]:
    by_name = {s.name: s for s in stages}
    found, todo = set(), list(by_name[root].inputs(by_name))
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(by_name[name].inputs(by_name))
    return found


def plan_stages(registry: list[tuple[Stage, Any]], config: PipelineConfig, *, only: str | None = None,
                from_stage: str | None = None, refresh: tuple[str, ...] = ()) -> list[PlannedStage]:
    active = active_stages(registry, config)
    stages = [s for s, _ in active]
    names = [s.name for s in stages]
    known = [s.name for s, _ in registry]
    for option, name in [("--only", only), ("--from", from_stage), *[("--refresh", r) for r in refresh]]:
        if name is None:
            continue
        if name not in known:
            raise PipelineError(f"{option} {name}: unknown stage; stages are {', '.join(known)}")
        if name not in names:
            raise PipelineError(f"{option} {name}: stage is not configured in this pipeline (no "
                                f"{_section_name(name)} section); configured: {', '.join(names)}")
    forced = set(refresh) | (_downstream(stages, from_stage) if from_stage else set())
    planned = []
    for stage, task in active:
        if only and stage.name != only:
            if stage.name in _upstream(stages, only):
                planned.append(PlannedStage(stage, task, "cached"))
            continue
        planned.append(PlannedStage(stage, task, "refresh" if stage.name in forced else "run"))
    return planned


def stage_key(stage: Stage, config: PipelineConfig, upstream: dict[str, dict]) -> str:
    """Cache key of `stage`; `upstream` holds the results of exactly the stages it reads. A stage that
    loads models also keys on where and how (device, dtype, chat template): a bfloat16 GPU run is
    not the float32 CPU run."""
    section = stage.section(config)
    if stage.loads_models:
        from alignflow.models import template_text  # a template file's text, so an edit changes the key

        section = {"section": section, "device": config.execution.device, "dtype": config.execution.dtype,
                   "chat_template": template_text(config.chat_template)}
    if launched(stage.name, config):  # the global batch is batch_size x processes
        execution = config.execution
        accelerate_config = Path(execution.accelerate_config) if execution.accelerate_config else None
        section = {"section": section, "processes": job_processes(config),
                   "accelerate_config": accelerate_config.read_text() if accelerate_config else None}
    return stage_cache_key(
        stage=stage.name,
        section_digest=section_digest(section),
        input_digests={name: result["digest"] for name, result in upstream.items()},
        code=code_digest(stage.modules),
    )


def cache_dir(config: PipelineConfig) -> Path:
    return Path(config.cache.dir).resolve()


def lookup(config: PipelineConfig, key: str) -> tuple[dict | None, str | None]:
    """(cached result, None) if usable; (None, why not) otherwise."""
    cached, problem = read_cached_result(cache_dir(config), key)
    if cached is None:
        return None, problem
    problem = verify_manifest(Path(cached["out_dir"]), cached["digest"], config.cache.verify)
    return (None, problem) if problem else (cached, None)


def call_stage(stage: Stage, config: PipelineConfig, upstream: dict[str, dict], out_dir: Path,
               section: Any = None) -> StageOutput:
    """The stage's own function, seeded, inside the active MLflow run (here, or in each process of a
    launched job); `section` when the caller has computed it already."""
    seed_everything(config.seed)
    section = stage.section(config) if section is None else section
    return stage.run(StageContext(stage.name, config, section, upstream, out_dir))


def stage_gpus(config: PipelineConfig) -> list[int]:
    """The GPUs side-by-side stages (parallel_stages) spread over: all of them when execution.device
    is auto and there are several, none otherwise (the stages share execution.device)."""
    if config.execution.device != "auto":
        return []
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return list(range(count)) if count > 1 else []


def least_busy(gpus: list[int], busy: Counter) -> int:
    """The GPU running the fewest stages (the lowest index among equals)."""
    return min(gpus, key=lambda gpu: (busy[gpu], gpu))


def execute_stage(stage: Stage, request: dict) -> dict:
    """Run one stage into a fresh output folder under its own MLflow child run; return its result.
    A `device` in the request (the GPU a side-by-side stage was given) replaces execution.device."""
    config = PipelineConfig.model_validate(request["config"])
    if request.get("device"):
        config = config.model_copy(update={"execution": config.execution.model_copy(
            update={"device": request["device"]})})
    out_dir = Path(request["out_dir"])
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    tracking.setup_tracking(config)
    section = stage.section(config)
    params = flatten_params(section)
    run_id = tracking.start_stage_run(request["experiment_id"], request["parent_run_id"], stage.name,
                                      request["cache_key"], request["upstream_runs"])
    started = time.perf_counter()
    with mlflow.start_run(run_id=run_id, nested=True):
        for start in range(0, len(params), 100):
            mlflow.log_params(dict(list(params.items())[start : start + 100]))
        if launched(stage.name, config):
            from alignflow.models import resolve_placement

            on_gpu = resolve_placement(config.execution.device, config.execution.dtype).device.startswith("cuda")
            output = run_launched(stage.name, request, run_id, on_gpu)
        else:
            output = call_stage(stage, config, request["upstream"], out_dir, section)
        digest = write_manifest(out_dir)
        metrics = {**output.metrics, "stage_seconds": time.perf_counter() - started}
        mlflow.log_metrics(metrics)
        mlflow.set_tag("alignflow.output_digest", digest)
    return {
        "stage": stage.name,
        "cache_key": request["cache_key"],
        "out_dir": str(out_dir),
        "outputs": output.outputs,
        "digest": digest,
        "metrics": metrics,
        "params": params,
        "summary": output.summary,
        "mlflow_run_id": run_id,
    }


@dataclass
class StageReport:
    stage: str
    status: str  # computed | cached
    seconds: float
    result: dict


class PipelineRun(list):
    """The reports of the stages a pipeline run computed or took from cache, in order, plus the id of
    its parent MLflow run (where its config, lineage and report are)."""

    def __init__(self, reports: list[StageReport], parent_run_id: str) -> None:
        super().__init__(reports)
        self.parent_run_id = parent_run_id


def run_pipeline(config: PipelineConfig, config_path: str, registry: list[tuple[Stage, Any]], *,
                 only: str | None = None, from_stage: str | None = None,
                 refresh: tuple[str, ...] = ()) -> PipelineRun:
    """Run the planned stages, each through its Prefect task (so Prefect caches it): in order in this
    process, or with `execution.parallel_stages` > 1 as soon as their inputs are ready, each in a
    worker process."""
    plan = plan_stages(registry, config, only=only, from_stage=from_stage, refresh=refresh)
    active = {stage.name for stage, _ in active_stages(registry, config)}
    experiment_id = tracking.setup_tracking(config)
    parent_run_id = tracking.start_parent_run(experiment_id, config, config_path)
    mlflow.MlflowClient().log_text(parent_run_id, Path(config_path).read_text(encoding="utf-8"), "config.yaml")
    context = _RunContext(config, active, experiment_id, parent_run_id)
    ok = False
    try:
        if config.execution.parallel_stages > 1:
            reports = _run_concurrently(plan, context, config.execution.parallel_stages)
        else:
            reports = [_run_one(planned, context) for planned in plan]
        reports = [report for report, planned in zip(reports, plan, strict=True) if planned.mode != "cached"]
        publish_run_summary(parent_run_id)  # lineage.json, lineage.svg and report.html on the parent run
        ok = True
    finally:
        tracking.end_run(parent_run_id, ok)
    return PipelineRun(reports, parent_run_id)


@dataclass
class _RunContext:
    """What every stage of one pipeline run shares; `results` fills up as stages finish."""

    config: PipelineConfig
    active: set[str]
    experiment_id: str
    parent_run_id: str
    results: dict[str, dict] = field(default_factory=dict)

    def upstream(self, stage: Stage) -> dict[str, dict]:
        return {name: self.results[name] for name in stage.inputs(self.active)}

    def ready(self, stage: Stage) -> bool:
        return all(name in self.results for name in stage.inputs(self.active))


@dataclass(frozen=True)
class _Launch:
    """A stage about to run: its task (with cache options) and request, or its cached report."""

    task: Any = None
    request: dict | None = None
    report: StageReport | None = None


def _run_one(planned: PlannedStage, context: _RunContext) -> StageReport:
    launch = _prepare(planned, context)
    if launch.report is not None:
        report = launch.report
    else:
        started = time.perf_counter()
        state = launch.task(launch.request, return_state=True)
        report = _finish(planned.stage, state, time.perf_counter() - started, launch.request, context)
    context.results[planned.stage.name] = report.result
    return report


def _run_concurrently(plan: list[PlannedStage], context: _RunContext, workers: int) -> list[StageReport]:
    """Launch every stage whose inputs are ready into a process pool; collect them as they finish."""
    from prefect.futures import as_completed
    from prefect.task_runners import ProcessPoolTaskRunner

    reports: dict[str, StageReport] = {}
    waiting = list(plan)
    running: dict[Any, tuple[PlannedStage, dict, float]] = {}
    gpus, busy = stage_gpus(context.config), Counter()
    with ProcessPoolTaskRunner(max_workers=workers) as pool:
        while waiting or running:
            ready = [p for p in waiting if context.ready(p.stage)]
            for planned in ready:
                waiting.remove(planned)
                launch = _prepare(planned, context)
                if launch.report is not None:
                    reports[planned.stage.name] = launch.report
                    context.results[planned.stage.name] = launch.report.result
                    continue
                if gpus and planned.stage.loads_models and not launched(planned.stage.name, context.config):
                    gpu = least_busy(gpus, busy)
                    busy[gpu] += 1
                    launch.request["device"] = f"cuda:{gpu}"  # not in the key: any GPU gives the result
                future = pool.submit(launch.task, parameters={"request": launch.request})
                running[future] = (planned, launch.request, time.perf_counter())
            if not running:
                if not ready:  # nothing to wait for: the plan is not closed under its inputs
                    raise PipelineError(f"stages {', '.join(p.stage.name for p in waiting)} wait for inputs "
                                        "that no planned stage produces")
                continue  # cached stages made more stages ready
            future = next(as_completed(list(running)))  # a finished one
            planned, request, started = running.pop(future)
            if "device" in request:
                busy[int(request["device"].partition(":")[2])] -= 1
            future.wait()  # not redundant: it loads the final Prefect state (else still PENDING)
            report = _finish(planned.stage, future.state, time.perf_counter() - started, request, context)
            reports[planned.stage.name] = report
            context.results[planned.stage.name] = report.result
    return [reports[planned.stage.name] for planned in plan]


def _prepare(planned: PlannedStage, context: _RunContext) -> _Launch:
    """Cache key, cache lookup and the stage's request; a `--only` upstream stage is served here."""
    stage, config = planned.stage, context.config
    upstream = context.upstream(stage)
    key = stage_key(stage, config, upstream)
    cached, problem = lookup(config, key)
    if planned.mode == "cached":
        if cached is None:
            raise PipelineError(f"stage {stage.name} is needed from cache but has no usable cached result "
                                f"({problem}); run the pipeline without --only first")
        return _Launch(report=StageReport(stage.name, "cached", 0.0, cached))
    refresh = planned.mode == "refresh" or (cached is None and problem != "not cached")
    reason = "forced" if planned.mode == "refresh" else ("cache invalid: " + problem if refresh else "")
    print(f"[alignflow] {stage.name}: key {key}{' (' + reason + ')' if reason else ''}", flush=True)
    request = {
        "config": config.model_dump(mode="json", by_alias=True),
        "cache_key": key,
        "out_dir": str(Path(config.artifacts_dir).resolve() / stage.name / key),
        "upstream": upstream,
        "upstream_runs": {name: result["mlflow_run_id"] for name, result in upstream.items()},
        "experiment_id": context.experiment_id,
        "parent_run_id": context.parent_run_id,
    }
    task = planned.task.with_options(result_storage=cache_dir(config), refresh_cache=refresh)
    return _Launch(task=task, request=request)


def _finish(stage: Stage, state: Any, seconds: float, request: dict, context: _RunContext) -> StageReport:
    """The stage's report from its final Prefect state; a cache hit gets its child run here."""
    result = state.result()  # raises the stage's error
    if state.name == "Cached":
        tracking.record_cache_hit(context.experiment_id, context.parent_run_id, result, request["upstream_runs"])
        print(f"[alignflow] {stage.name}: from cache (computed by run {result['mlflow_run_id']})", flush=True)
        return StageReport(stage.name, "cached", seconds, result)
    print(f"[alignflow] {stage.name}: computed in {seconds:.1f}s (run {result['mlflow_run_id']})", flush=True)
    return StageReport(stage.name, "computed", seconds, result)


STAGE_TASK_OPTIONS = {
    "cache_key_fn": lambda context, parameters: parameters["request"]["cache_key"],
    "persist_result": True,
    "result_serializer": "json",
}
