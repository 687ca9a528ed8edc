"""Killed training stages resume from their last complete checkpoint, through the CLI as a user
runs it: the process is killed mid-stage (SIGKILL, no clean-up), `alignflow run` again resumes,
and the run the pipeline points at has each step's metrics exactly once. Runs on the shared
trained project with `--only STAGE`, so upstream stages come from cache."""

from __future__ import annotations

import shutil

import pytest
from helpers import (
    config_variant,
    metric_steps,
    project_store,
    run_in_this_process,
    run_until_killed,
    stage_runs,
    stage_statuses,
)

pytestmark = pytest.mark.slow




def test_a_killed_sft_run_resumes_from_its_last_checkpoint(training_project, tmp_path, capsys):
    folder = training_project.folder

    def long_plain_sft(sft: dict) -> None:
        for key in ("mixing", "curriculum", "plateau"):
            sft.pop(key, None)
        sft.update(max_steps=20, logging_steps=1, eval_steps=100, save_steps=5)

    config = config_variant(training_project, "resume-sft", "sft", long_plain_sft)
    checkpoints = folder / ".alignflow" / "checkpoints" / "sft"
    shutil.rmtree(checkpoints, ignore_errors=True)

    def saved_step_10_or_15() -> bool:  # a folder is written before its state file
        return any(p.name in ("checkpoint-10", "checkpoint-15") and (p / "trainer_state.json").is_file()
                   for p in checkpoints.glob("*/checkpoint-*"))

    run_until_killed(folder, ["run", config, "--only", "sft"], saved_step_10_or_15, tmp_path / "killed.log")
    killed = stage_runs(folder, "sft")[-1]
    assert 10 <= max(metric_steps(folder, killed.info.run_id, "loss")) < 20

    result = run_in_this_process(["run", config, "--only", "sft"], folder, capsys)
    assert result.returncode == 0, result.stdout + result.stderr
    assert stage_statuses(result.stdout) == {"sft": "computed"}, "upstream stages come from cache"
    assert "1 stages: 1 computed, 0 from cache" in result.stdout  # the summary's totals line
    resumed = stage_runs(folder, "sft")[-1]
    start = resumed.data.metrics["resumed_from_step"]
    assert start >= 10 and start % 5 == 0, "resumed from a saved checkpoint, not step 0"
    assert resumed.data.metrics["global_step"] == 20
    assert metric_steps(folder, resumed.info.run_id, "loss") == list(range(1, 21)), "one value per step"
    assert project_store(folder).get_run(killed.info.run_id).info.status == "KILLED"
    assert not any(checkpoints.glob("*/checkpoint-*")), "a finished run deletes its checkpoints"


def test_a_killed_ppo_run_resumes_from_its_last_checkpoint(training_project, tmp_path, capsys):
    folder = training_project.folder
    config = config_variant(training_project, "resume-ppo", "ppo", lambda ppo: ppo.update(max_steps=12, save_steps=3))
    checkpoints = folder / ".alignflow" / "checkpoints" / "ppo"
    shutil.rmtree(checkpoints, ignore_errors=True)

    def saved_step_6() -> bool:  # state.json is written last
        return any(checkpoints.glob("*/step-6/state.json"))

    run_until_killed(folder, ["run", config, "--only", "ppo"], saved_step_6, tmp_path / "killed.log")
    killed = stage_runs(folder, "ppo")[-1]
    assert 6 <= max(metric_steps(folder, killed.info.run_id, "reward_mean")) < 12

    result = run_in_this_process(["run", config, "--only", "ppo"], folder, capsys)
    assert result.returncode == 0, result.stdout + result.stderr
    assert stage_statuses(result.stdout) == {"ppo": "computed"}
    resumed = stage_runs(folder, "ppo")[-1]
    start = resumed.data.metrics["resumed_from_step"]
    assert start >= 6 and start % 3 == 0, "resumed from a saved checkpoint, not step 0"
    for key in ("reward_mean", "kl_mean", "policy_loss"):
        assert metric_steps(folder, resumed.info.run_id, key) == list(range(1, 13)), key
    assert project_store(folder).get_run(killed.info.run_id).info.status == "KILLED"
    assert not any(checkpoints.glob("*/step-*")), "a finished run deletes its checkpoints"
