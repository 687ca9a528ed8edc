"""The reward_model stage's section (tasks/reward_model.py): a Bradley-Terry reward model."""

from __future__ import annotations

from pydantic import Field

from alignflow.schemas.trainer import CheckpointedTrainer


class RewardModelConfig(CheckpointedTrainer):
    """Bradley-Terry reward model (TRL RewardTrainer), initialised from the SFT model."""

    use_margin: bool = Field(False, description="Subtract the pair's margin inside the loss (Llama-2 style).")
    center_rewards_coefficient: float | None = Field(
        None, ge=0, description="Push rewards towards zero mean (TRL's auxiliary loss). None: off."
    )
    max_length: int = Field(256, ge=8, description="Longest prompt + response, in tokens.")
    eval_steps: int = Field(25, ge=1, description="Steps between held-out evaluations.")
