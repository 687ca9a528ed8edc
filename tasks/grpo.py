"""Stage `grpo`: GRPO (TRL) against the reward model, compared with PPO on the same footing
(alignflow.training.group_rl)."""

from __future__ import annotations

from prefect import task

from alignflow.runner import STAGE_TASK_OPTIONS, execute_stage
from alignflow.schemas.config import PipelineConfig
from alignflow.stage import Stage
from alignflow.training.group_rl import run_group_rl


def grpo_section(config: PipelineConfig) -> dict | None:
    settings = config.stages.grpo
    return None if settings is None else {"seed": config.seed, **settings.model_dump(mode="json")}


STAGE = Stage(
    name="grpo",
    upstream=("sft", "reward_model", "preferences"),
    section=grpo_section,
    run=run_group_rl,
    description="GRPO (TRL) against the reward model, the SFT policy as reference.",
    loads_models=True,
)


@task(name="grpo", **STAGE_TASK_OPTIONS)
def grpo_task(request: dict) -> dict:
    return execute_stage(STAGE, request)
