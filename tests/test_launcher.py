"""Training stages as a distributed job (`execution.launcher: accelerate`): 2 CPU processes over gloo
(torchrun) give the curves of 1 process with the same global batch, one MLflow run and one model
folder per stage, and resume after a kill."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import (
    REPO,
    make_project,
    metric_steps,
    project_store,
    run_here,
    run_in_this_process,
    run_until_killed,
    stage_runs,
    stage_statuses,
)

from alignflow.demo.foreign import build_foreign_model, corpus_texts

pytestmark = pytest.mark.slow

SMOKE = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text(encoding="utf-8"))["stages"]
# Qwen2 has no dropout by default: two processes and one then see the same arithmetic.
STAGES = {
    **{name: SMOKE[name] for name in ("build", "clean", "validate")},
    "sft": {"method": "full", "max_steps": 6, "batch_size": 4, "logging_steps": 1, "eval_steps": 3, "save_steps": 3,
            "max_length": 96},
    "preferences": {"tasks": ["add", "reverse"], "num_samples": 2, "max_new_tokens": 4, "heldout_fraction": 0.25,
                    "max_prompts": 16, "annotator": "judge", "judge": {"model": "models/qwen2"}},
    "dpo": {"max_steps": 4, "batch_size": 4, "logging_steps": 1, "eval_steps": 2, "save_steps": 4,
            "win_rate_max_new_tokens": 2},
    "reward_model": {"max_steps": 2, "batch_size": 4, "logging_steps": 1, "eval_steps": 2},
    # batch_size is PPO's global rollout batch: a launched job splits it over its ranks
    "ppo": {"max_steps": 3, "batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 4,
            "save_steps": 3, "sample_every": 3},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project whose one-process pipeline has run, so that any test may run one stage with
    `--only` from its cached upstream, in any order."""
    folder = make_project(tmp_path_factory.mktemp("launcher"))
    build_foreign_model("qwen2_chatml", folder / "models" / "qwen2", corpus_texts(folder / "data"))
    inline = run_here(["run", write_config(folder, "inline.yaml")], folder)
    assert inline.returncode == 0, inline.stdout[-3000:] + inline.stderr[-3000:]
    return folder


def write_config(folder: Path, name: str, *, launched: dict[str, str] | None = None, batch: int = 4,
                 change=None) -> str:
    stages = json.loads(json.dumps(STAGES))
    stages["build"]["demo_families"] = {"families": ["add", "reverse"], "per_family": 12}
    for stage in launched or {}:
        if stage != "ppo":
            stages[stage]["batch_size"] = batch
    if change:
        change(stages)
    execution = {"stage_launchers": launched, "num_processes": 2} if launched else {}
    config = {"name": "launcher", "seed": 0, "base_model": "models/qwen2", "execution": execution, "stages": stages}
    (folder / "configs" / name).write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return f"configs/{name}"


def computing_run(folder: Path, run):
    """The run that computed a stage: `run` itself, or the one a cache-hit run names."""
    cached_from = run.data.tags.get("alignflow.cached_from")
    return project_store(folder).get_run(cached_from) if cached_from else run


def curve(folder: Path, run_id: str, key: str) -> list[float]:
    history = project_store(folder).get_metric_history(run_id, key)
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def test_two_processes_train_sft_and_dpo_as_one_with_the_same_global_batch(project, capsys):
    inline = run_in_this_process(["run", write_config(project, "inline.yaml")], project, capsys)
    assert inline.returncode == 0, inline.stdout[-3000:] + inline.stderr[-3000:]
    one_sft, one_dpo = (computing_run(project, stage_runs(project, name, "launcher")[-1]) for name in ("sft", "dpo"))

    # DPO as a 2-process job (per-device batch 2), on the same SFT model and pairs (from cache)
    result = run_in_this_process(["run", write_config(project, "dpo2.yaml", launched={"dpo": "accelerate"},
                                                      batch=2)], project, capsys)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    statuses = stage_statuses(result.stdout)
    assert statuses["dpo"] == "computed" and statuses["sft"] == statuses["preferences"] == "cached"
    assert "dpo: launching 2 processes (torchrun, gloo)" in result.stdout
    two_dpo = stage_runs(project, "dpo", "launcher")[-1]
    assert curve(project, two_dpo.info.run_id, "loss") == pytest.approx(curve(project, one_dpo.info.run_id, "loss"),
                                                                         abs=1e-4)
    assert metric_steps(project, two_dpo.info.run_id, "loss") == [1, 2, 3, 4]

    # SFT as a 2-process job: the training curve of the 1-process run (validation batches differ in
    # size, so the validation loss only nearly)
    result = run_in_this_process(["run", write_config(project, "sft2.yaml", launched={"sft": "accelerate"}, batch=2),
                                  "--only", "sft"], project, capsys)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    two_sft = stage_runs(project, "sft", "launcher")[-1]
    assert curve(project, two_sft.info.run_id, "loss") == pytest.approx(curve(project, one_sft.info.run_id, "loss"),
                                                                         abs=1e-4)
    assert curve(project, two_sft.info.run_id, "eval_loss") == pytest.approx(
        curve(project, one_sft.info.run_id, "eval_loss"), abs=1e-2)

    # one MLflow run per stage and pipeline run (the other rank logs into a scratch store that goes
    # with the job), the same artifacts as inline, one model folder, no job folder left
    client = project_store(project)
    experiment = client.get_experiment_by_name("launcher")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [(r.data.tags["mlflow.parentRunId"], r.data.tags["alignflow.pipeline.stage"]) for r in runs
                if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) >= 3 and len(children) == len(set(children)), "one run per stage and pipeline run"
    assert len(runs) == len(parents) + len(children)
    assert {a.path for a in client.list_artifacts(two_dpo.info.run_id)} == \
        {a.path for a in client.list_artifacts(one_dpo.info.run_id)}
    key = two_sft.data.tags["alignflow.cache_key"]
    assert (project / "artifacts" / "sft" / key / "model" / "model.safetensors").is_file()
    assert not [p for p in (project / ".alignflow" / "launch").rglob("*") if p.is_file()], "the job folder goes"
    assert two_sft.data.params["model.policy.device"] == "cpu"


def test_two_processes_run_ppo_as_one(project, capsys):
    """Each rank rolls out half the prompts (seeded per prompt slot), the rollouts are gathered, each
    minibatch is split over the ranks: the curves are the one-process curves."""
    inline = run_in_this_process(["run", write_config(project, "inline.yaml")], project, capsys)
    assert inline.returncode == 0, inline.stdout[-3000:] + inline.stderr[-3000:]
    one = computing_run(project, stage_runs(project, "ppo", "launcher")[-1])
    result = run_in_this_process(["run", write_config(project, "ppo2.yaml", launched={"ppo": "accelerate"}),
                                  "--only", "ppo"], project, capsys)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ppo: launching 2 processes (torchrun, gloo)" in result.stdout
    two = stage_runs(project, "ppo", "launcher")[-1]
    assert two.info.run_id != one.info.run_id
    for key in ("reward_mean", "kl_mean", "response_length", "policy_loss", "value_loss", "entropy", "grad_norm"):
        assert curve(project, two.info.run_id, key) == pytest.approx(curve(project, one.info.run_id, key), abs=1e-4), key
    assert metric_steps(project, two.info.run_id, "policy_loss") == [1, 2, 3]
    for key in ("heldout_reward_ppo", "heldout_kl_to_sft", "oracle_win_rate_vs_sft"):
        assert two.data.metrics[key] == pytest.approx(one.data.metrics[key], abs=1e-4), key
    client = project_store(project)
    assert {a.path for a in client.list_artifacts(two.info.run_id)} == {a.path for a in client.list_artifacts(one.info.run_id)}

    def upstream_stages(run) -> list[str]:
        return sorted(entry.split(":")[0] for entry in run.data.tags["alignflow.upstream_runs"].split(","))
    same_lineage = ["instructions", "preferences", "reward_model", "sft"]  # instructions: the SFT loss's rows
    assert upstream_stages(two) == upstream_stages(one) == same_lineage
    key = two.data.tags["alignflow.cache_key"]
    assert (project / "artifacts" / "ppo" / key / "model" / "model.safetensors").is_file()


def test_a_launched_ppo_batch_must_split_over_the_processes(project, capsys):
    def odd(stages: dict) -> None:
        stages["ppo"]["mini_batch_size"] = 3

    config = write_config(project, "odd.yaml", launched={"ppo": "accelerate"}, change=odd)
    result = run_in_this_process(["validate", config], project, capsys)
    assert result.returncode == 2
    assert "stages.ppo.mini_batch_size (3) must be a multiple of the launched job's 2 processes" in result.stderr


def test_a_killed_two_process_job_resumes_from_its_checkpoint(project, tmp_path, capsys):
    def longer(stages: dict) -> None:
        stages["sft"].update(max_steps=12, save_steps=4, eval_steps=100)

    config = write_config(project, "resume2.yaml", launched={"sft": "accelerate"}, batch=2, change=longer)
    checkpoints = project / ".alignflow" / "checkpoints" / "sft"
    shutil.rmtree(checkpoints, ignore_errors=True)

    def saved_step_4_or_8() -> bool:
        return any(p.name in ("checkpoint-4", "checkpoint-8") and (p / "trainer_state.json").is_file()
                   for p in checkpoints.glob("*/checkpoint-*"))

    run_until_killed(project, ["run", config, "--only", "sft"], saved_step_4_or_8, tmp_path / "killed.log")
    result = run_in_this_process(["run", config, "--only", "sft"], project, capsys)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resumed = stage_runs(project, "sft", "launcher")[-1]
    assert resumed.data.metrics["resumed_from_step"] in (4.0, 8.0)
    assert resumed.data.metrics["global_step"] == 12
    assert metric_steps(project, resumed.info.run_id, "loss") == list(range(1, 13)), "one value per step"


def test_a_launched_stage_that_fails_is_one_line(project, capsys):
    def nothing_fits(stages: dict) -> None:
        stages["sft"]["max_length"] = 8  # every response is cut away: the stage's own DataError

    config = write_config(project, "fails.yaml", launched={"sft": "accelerate"}, batch=2, change=nothing_fits)
    result = run_in_this_process(["run", config, "--only", "sft"], project, capsys)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: sft (launched job, rank 0): sft: no training example left")
