"""Independent stages run at once (`execution.parallel_stages`), each in a worker process, with the
same results as the sequential run: here dpo and grpo, which both read the reward model, recomputed
side by side on the shared trained project (ppo, rloo, evaluate and the sweep points left out)."""

from __future__ import annotations

import shutil

import pytest
from helpers import config_variant, project_store, run_cli, stage_statuses

from alignflow.tracking.runs import TAG_STAGE

pytestmark = pytest.mark.slow




def test_dpo_and_grpo_run_concurrently_with_the_same_outputs(training_project):
    folder = training_project.folder
    client = project_store(folder)
    first = {r.data.tags[TAG_STAGE]: r for r in client.search_runs(
        [client.get_experiment_by_name("smoke").experiment_id],
        f"tags.`mlflow.parentRunId` = '{training_project.parent_run_id}'")}

    def two_workers_no_downstream(config: dict) -> None:
        config["execution"] = {"parallel_stages": 2}
        # Its own cache and output folders, so the shared project's results stay as they were.
        config["cache"] = {"dir": ".alignflow/cache-parallel"}
        config["artifacts_dir"] = "artifacts-parallel"
        for stage in ("ppo", "rloo", "evaluate"):
            del config["stages"][stage]
        config.pop("sweeps", None)

    config = config_variant(training_project, "parallel", None, two_workers_no_downstream)
    shutil.copytree(folder / ".alignflow" / "cache", folder / ".alignflow" / "cache-parallel")
    result = run_cli(["run", config, "--refresh", "dpo", "--refresh", "grpo"], folder, folder / ".prefect")
    assert result.returncode == 0, result.stdout + result.stderr
    status = stage_statuses(result.stdout)
    assert status["dpo"] == status["grpo"] == "computed"
    assert status["sft"] == status["reward_model"] == "cached"

    parent = client.search_runs([client.get_experiment_by_name("smoke").experiment_id],
                                "tags.`alignflow.config_path` = 'configs/parallel.yaml'")[0]
    runs = {r.data.tags[TAG_STAGE]: r for r in client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
    grpo, dpo = runs["grpo"].info, runs["dpo"].info
    assert grpo.start_time < dpo.end_time and dpo.start_time < grpo.end_time, "the two runs overlap"
    for stage in ("dpo", "grpo"):
        assert outcome(runs[stage]) == pytest.approx(outcome(first[stage]), abs=1e-6), f"{stage}: as in sequence"


def outcome(run) -> dict[str, float]:
    """A run's final metrics, less timings and registry numbers."""
    return {k: v for k, v in run.data.metrics.items()
            if not any(word in k for word in ("second", "time", "registry", "flos"))}
