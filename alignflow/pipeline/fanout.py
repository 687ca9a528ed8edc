"""Data stages fanned out over a Prefect task runner (`execution.task_runner`).

A stage splits its work (e.g. preference sampling's prompts) into shards of whole batches and
submits one Prefect task per shard to the configured runner: threads, processes, or a Dask cluster
(a local one of `data_workers` worker processes, or the scheduler at `dask_address`). Each shard
is a task run of its own in the Prefect UI. Shards are batch-aligned and sampling is seeded per row
(alignflow.models.generation), so a shard computes exactly the batches one process would, and the gathered
rows equal the inline rows: the runner is therefore not part of a stage's cache key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from alignflow.errors import ConfigError
from alignflow.schemas.config import ExecutionConfig


def batch_shards(count: int, batch_size: int, workers: int) -> list[tuple[int, int]]:
    """[start, end) ranges over `count` items: at most `workers` shards, each of whole batches."""
    batches = math.ceil(count / batch_size)
    per_shard = max(1, math.ceil(batches / max(workers, 1))) * batch_size
    return [(start, min(start + per_shard, count)) for start in range(0, count, per_shard)]


def task_runner(execution: ExecutionConfig):
    """The Prefect task runner `execution.task_runner` names (not entered)."""
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    if execution.task_runner == "thread":
        return ThreadPoolTaskRunner(max_workers=execution.data_workers)
    if execution.task_runner == "process":
        return ProcessPoolTaskRunner(max_workers=execution.data_workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as missing:
        raise ConfigError("execution.task_runner dask needs Prefect's Dask task runner: "
                          "pip install 'alignflow[dask]' (prefect-dask, distributed)") from missing

    if execution.dask_address:
        return DaskTaskRunner(address=execution.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": execution.data_workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})


def fan_out(execution: ExecutionConfig, shard_task, shards: Sequence[dict[str, Any]]) -> list[Any]:
    """`shard_task` on every parameter set of `shards`, results in shard order. Inline (or a single
    shard) calls the task's function here, in this process."""
    if execution.task_runner == "inline" or len(shards) <= 1:
        return [shard_task.fn(**parameters) for parameters in shards]
    with task_runner(execution) as runner:
        futures = [runner.submit(shard_task, parameters=dict(parameters)) for parameters in shards]
        return [future.result() for future in futures]
