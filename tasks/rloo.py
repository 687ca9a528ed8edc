"""Stage `rloo`: RLOO (TRL) against the reward model, compared with PPO on the same footing
(alignflow.training.group_rl)."""

from __future__ import annotations

from prefect import task

from alignflow.runner import STAGE_TASK_OPTIONS, execute_stage
from alignflow.schemas.config import PipelineConfig
from alignflow.stage import Stage
from alignflow.training.group_rl import run_group_rl


def rloo_section(config: PipelineConfig) -> dict | None:
    settings = config.stages.rloo
    return None if settings is None else {"seed": config.seed, **settings.model_dump(mode="json")}


STAGE = Stage(
    name="rloo",
    upstream=("sft", "reward_model", "preferences"),
    section=rloo_section,
    run=run_group_rl,
    description="RLOO (TRL) against the reward model, the SFT policy as reference.",
    loads_models=True,
)


@task(name="rloo", **STAGE_TASK_OPTIONS)
def rloo_task(request: dict) -> dict:
    return execute_stage(STAGE, request)
