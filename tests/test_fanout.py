"""Data stages fanned out over a Prefect task runner (`execution.task_runner`): preference sampling
over batch-aligned prompt shards on threads, processes or a local Dask cluster gives the rows of
one process, with one Prefect task run per shard."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import REPO, make_project, run_in_this_process, stage_statuses

from alignflow.demo.foreign import build_foreign_model, corpus_texts
from alignflow.pipeline.fanout import batch_shards

SMOKE = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text(encoding="utf-8"))["stages"]
STAGES = {
    **{name: SMOKE[name] for name in ("build", "clean", "validate")},
    "sft": {"method": "full", "max_steps": 2, "batch_size": 4, "logging_steps": 1, "eval_steps": 2, "save_steps": 2,
            "max_length": 96},
    "preferences": {"tasks": ["add", "reverse"], "num_samples": 3, "max_new_tokens": 6, "heldout_fraction": 0.25,
                    "max_prompts": 14, "batch_size": 4, "temperature": 1.0},
}


def test_shards_are_whole_batches_covering_every_item():
    assert batch_shards(14, 4, 2) == [(0, 8), (8, 14)]
    assert batch_shards(14, 4, 8) == [(0, 4), (4, 8), (8, 12), (12, 14)]
    assert batch_shards(3, 4, 2) == [(0, 3)]
    assert batch_shards(0, 4, 2) == []
    for count, batch, workers in ((100, 7, 3), (5, 1, 5), (33, 32, 2)):
        shards = batch_shards(count, batch, workers)
        assert len(shards) <= workers and shards[0][0] == 0 and shards[-1][1] == count
        assert all(a[1] == b[0] for a, b in zip(shards, shards[1:], strict=False))
        assert all((end - start) % batch == 0 for start, end in shards[:-1])


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    folder = make_project(tmp_path_factory.mktemp("fanout"))
    build_foreign_model("qwen2_chatml", folder / "models" / "qwen2", corpus_texts(folder / "data"))
    return folder


def write_config(folder: Path, name: str, execution: dict) -> str:
    stages = json.loads(json.dumps(STAGES))
    stages["build"]["demo_families"] = {"families": ["add", "reverse"], "per_family": 12}
    config = {"name": "fanout", "seed": 0, "base_model": "models/qwen2", "execution": execution, "stages": stages}
    (folder / "configs" / name).write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return f"configs/{name}"


def sampled_rows(folder: Path) -> dict[str, pd.DataFrame]:
    """The newest preferences output's tables: every sample and the pairs made of them."""
    newest = max((folder / "artifacts" / "preferences").iterdir(), key=lambda p: p.stat().st_mtime)
    tables = {name: pd.read_parquet(newest / f"{name}.parquet") for name in ("samples", "pairs_train", "pairs_heldout")}
    assert len(tables["samples"]) == 14 and len(tables["pairs_train"]) > 0
    return tables


def shard_task_runs() -> set[str]:
    """Names of the shard task runs in this test session's Prefect database."""
    with sqlite3.connect(Path(os.environ["PREFECT_HOME"]) / "prefect.db") as db:
        return {name for (name,) in db.execute("SELECT name FROM task_run WHERE name LIKE 'preferences: sample%'")}


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["dask", "process", "thread"])
def test_fanned_out_preference_sampling_gives_the_inline_rows(project, capsys, runner):
    inline = run_in_this_process(["run", write_config(project, "inline.yaml", {})], project, capsys)
    assert inline.returncode == 0, inline.stdout[-3000:] + inline.stderr[-3000:]
    expected = sampled_rows(project)

    config = write_config(project, f"{runner}.yaml", {"task_runner": runner, "data_workers": 2})
    result = run_in_this_process(["run", config, "--refresh", "preferences"], project, capsys)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert stage_statuses(result.stdout)["preferences"] == "computed"
    assert stage_statuses(result.stdout)["sft"] == "cached", "the runner is not part of a cache key"
    assert {"preferences: sample from prompt 0", "preferences: sample from prompt 8"} <= shard_task_runs(), \
        "one Prefect task run per shard"
    for name, table in sampled_rows(project).items():
        pd.testing.assert_frame_equal(table, expected[name], obj=name)
