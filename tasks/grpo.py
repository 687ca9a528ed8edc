"""Stage `grpo`: GRPO (TRL) against the reward model, compared with PPO on the same footing
(alignflow.rl.group_rl)."""

from __future__ import annotations

from alignflow.pipeline.stage import InstructionData, ModelRef, PreferenceData, StageOutput, StageRun, stage
from alignflow.rl.group_rl import train_group_rl
from alignflow.schemas.stages.group_rl import GroupRLStageConfig


@stage("grpo", result=ModelRef, loads_models=True)
def train_grpo(cfg: GroupRLStageConfig, sft: ModelRef, reward_model: ModelRef, preferences: PreferenceData,
               instructions: InstructionData | None = None, *, run: StageRun) -> StageOutput:
    """GRPO (TRL) against the reward model, the SFT policy as reference."""
    return train_group_rl(cfg, sft, reward_model, preferences, instructions, run)
