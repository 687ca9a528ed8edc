"""The grpo and rloo stages' section (tasks/grpo.py, tasks/rloo.py): TRL's GRPO and RLOO trainers."""

from __future__ import annotations

from pydantic import Field, model_validator

from alignflow.schemas.trainer import CheckpointedTrainer, PreferenceTrainer, TrainerSettings, default


class GroupRLStageConfig(PreferenceTrainer):
    """GRPO or RLOO (TRL) against the reward model: several sampled responses per prompt, advantages
    relative to the group, a KL penalty to the SFT policy."""

    max_steps: int = default(TrainerSettings, "max_steps", 50)
    batch_size: int = Field(16, ge=2, description="Responses per step (a multiple of num_generations).")
    learning_rate: float = default(TrainerSettings, "learning_rate", 1e-5)
    warmup_steps: int = default(TrainerSettings, "warmup_steps", 0)
    save_steps: int = default(CheckpointedTrainer, "save_steps", 25)
    num_generations: int = Field(4, ge=2, description="Responses sampled per prompt (the group).")
    beta: float = Field(0.05, ge=0, description="KL coefficient to the reference (SFT) policy.")
    max_completion_length: int = Field(16, ge=1, description="Response length limit.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")

    @model_validator(mode="after")
    def _groups_fill_batches(self) -> GroupRLStageConfig:
        if self.batch_size % self.num_generations:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of num_generations "
                             f"({self.num_generations})")
        return self
