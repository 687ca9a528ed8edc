"""The dpo stage's section (tasks/dpo.py): TRL's DPOTrainer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alignflow.schemas.trainer import LoraSettings, PreferenceTrainer, TrainerSettings, default


class DPOStageConfig(PreferenceTrainer):
    """Direct preference optimisation (TRL DPOTrainer) from the SFT model, the SFT model as reference."""

    beta: float = Field(0.1, gt=0, description="Strength of the implicit KL constraint to the reference.")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field(
        "sigmoid", description="sigmoid: DPO; ipo: identity preference optimisation; hinge: SLiC."
    )
    method: Literal["full", "lora"] = Field("full", description="full: update every weight; lora: adapters "
                                            "(the reference is the adapter-disabled model).")
    lora: LoraSettings = LoraSettings()
    learning_rate: float = default(TrainerSettings, "learning_rate", 5e-5)
    max_length: int = Field(256, ge=8, description="Longest prompt + response, in tokens.")
    eval_steps: int = Field(25, ge=1, description="Steps between held-out evaluations.")
    win_rate_max_new_tokens: int = Field(16, ge=1, description="Greedy response length for the win rate.")
    heldout_max_new_tokens: int = Field(
        16, ge=1, description="Sampled response length of the held-out reward and KL measure (with a reward model); "
        "set it to PPO's max_new_tokens to compare the two on one frontier."
    )
