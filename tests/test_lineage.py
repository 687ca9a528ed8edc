"""`alignflow lineage RUN_ID` on the session's trained project, and the lineage.json of its pipeline run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli, run_in_this_process
from mlflow.tracking import MlflowClient

from alignflow.cli import main
from alignflow.tracking.lineage import parse_upstream

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(training_project) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{training_project.folder}/mlruns/mlflow.db")


def children(client: MlflowClient, parent_run_id: str) -> dict[str, object]:
    """Stage name -> child run of a pipeline run."""
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return {run.data.tags["alignflow.pipeline.stage"]: run for run in runs}


def read_json_artifact(client: MlflowClient, run_id: str, path: str, folder: Path):
    return json.loads(Path(client.download_artifacts(run_id, path, str(folder))).read_text(encoding="utf-8"))


def lineage(project, run_id: str):
    return run_cli(["lineage", run_id], project.folder, project.folder / ".prefect")


def test_lineage_of_a_pipeline_run_names_every_stage_dataset_and_model(training_project, store):
    result = lineage(training_project, training_project.parent_run_id)
    assert result.returncode == 0, result.stderr
    stages = children(store, training_project.parent_run_id)
    assert {"pretrain", "clean", "sft", "dpo", "ppo", "evaluate"} <= set(stages)
    for stage, run in stages.items():
        assert f"\n{stage} " in result.stdout and f"run {run.info.run_id}" in result.stdout
        for item in run.inputs.dataset_inputs:
            assert f"{item.dataset.name}  digest {item.dataset.digest}" in result.stdout
        for version in store.search_model_versions(f"run_id = '{run.info.run_id}'"):
            assert f"{version.name} version {version.version}" in result.stdout
    assert "smoke-sft version" in result.stdout


def test_lineage_of_the_evaluate_run_reaches_every_upstream_run(training_project, store, capsys):
    evaluate = children(store, training_project.parent_run_id)["evaluate"]
    result = run_in_this_process(["lineage", evaluate.info.run_id], training_project.folder, capsys)
    assert result.returncode == 0, result.stderr
    upstream, todo = set(), [evaluate.info.run_id]
    while todo:  # the transitive closure of the upstream tags, walked here independently
        tags = store.get_run(todo.pop()).data.tags
        for run_id in parse_upstream(tags.get("alignflow.upstream_runs")).values():
            if run_id not in upstream:
                upstream.add(run_id)
                todo.append(run_id)
    assert len(upstream) >= 10
    for run_id in upstream:
        assert f"\n{store.get_run(run_id).data.tags['alignflow.pipeline.stage']} " in result.stdout
        assert f"run {run_id}" in result.stdout
    assert "stage evaluate" in result.stdout.splitlines()[0]
    assert "sft.recognition.k0=" in result.stdout  # the evaluation's accuracies
    assert "eval-recognize_sentence_zh  digest" in result.stdout


def test_a_cache_hit_names_the_run_that_computed_it(training_project, store, tmp_path, monkeypatch, capsys):
    result = run_in_this_process(["run", training_project.config, "--only", "dpo"], training_project.folder,
                                 capsys)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    experiment = store.get_run(training_project.parent_run_id).info.experiment_id
    parents = store.search_runs([experiment], "tags.`alignflow.pipeline` = 'smoke'",
                                order_by=["attributes.start_time DESC"])
    newest = parents[0].info.run_id
    assert newest != training_project.parent_run_id
    cached_dpo = children(store, newest)["dpo"]
    computed_dpo = children(store, training_project.parent_run_id)["dpo"]
    assert cached_dpo.data.tags["alignflow.cached_from"] == computed_dpo.info.run_id

    monkeypatch.chdir(training_project.folder)  # the command in this process: a new one costs seconds
    assert main(["lineage", cached_dpo.info.run_id]) == 0
    shown = capsys.readouterr().out
    assert f"run {cached_dpo.info.run_id}  cached, computed by run {computed_dpo.info.run_id}" in shown
    for stage in ("sft", "preferences", "validate", "pretrain"):
        assert f"\n{stage} " in shown
    graph = read_json_artifact(store, newest, "lineage.json", tmp_path)
    node = next(n for n in graph["nodes"] if n["run_id"] == cached_dpo.info.run_id)
    assert node["status"] == "cached" and node["cached_from"] == computed_dpo.info.run_id


def test_an_unknown_run_id_is_a_clear_error(training_project, monkeypatch, capsys):
    monkeypatch.chdir(training_project.folder)
    assert main(["lineage", "0123456789abcdef0123456789abcdef"]) == 2
    error = capsys.readouterr().err
    assert "run 0123456789abcdef0123456789abcdef not found" in error


def test_the_pipeline_run_carries_lineage_json_matching_the_upstream_tags(training_project, store, tmp_path):
    graph = read_json_artifact(store, training_project.parent_run_id, "lineage.json", tmp_path)
    stages = children(store, training_project.parent_run_id)
    tagged = {(run_id, run.info.run_id) for run in stages.values()
              for run_id in parse_upstream(run.data.tags.get("alignflow.upstream_runs")).values()}
    assert {(edge["from"], edge["to"]) for edge in graph["edges"]} == tagged
    assert {node["run_id"] for node in graph["nodes"]} == {run.info.run_id for run in stages.values()}
    assert graph["parent_run_id"] == training_project.parent_run_id
    artifacts = {info.path for info in store.list_artifacts(training_project.parent_run_id)}
    assert {"lineage.json", "lineage.svg", "report.html"} <= artifacts
