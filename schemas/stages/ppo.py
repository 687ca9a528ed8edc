"""The ppo stage's section (tasks/ppo.py): alignflow's PPO loop (alignflow.rl)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alignflow.schemas.trainer import CheckpointedTrainer, PreferenceTrainer, TrainerSettings, default


class PPOStageConfig(PreferenceTrainer):
    """PPO with a per-token KL penalty to the SFT policy, against the reward model (alignflow's own).
    warmup_steps and logging_steps are not used: the rate is constant and every round is logged."""

    max_steps: int = default(TrainerSettings, "max_steps", 60)
    batch_size: int = Field(32, ge=2, description="Prompts per rollout.")
    learning_rate: float = default(TrainerSettings, "learning_rate", 1e-5)
    weight_decay: float = default(TrainerSettings, "weight_decay", 0.01)  # torch AdamW's own default
    warmup_steps: Literal[0] = Field(0, description="Not used: PPO's learning rate is constant.")
    logging_steps: Literal[1] = Field(1, description="Not used: every PPO round is logged.")
    save_steps: int = default(CheckpointedTrainer, "save_steps", 10)
    mini_batch_size: int = Field(16, ge=1, description="Responses per gradient step.")
    ppo_epochs: int = Field(2, ge=1, description="Passes over each rollout batch.")
    kl_coef: float = Field(0.05, ge=0, description="beta of the per-token penalty -beta * (log pi - log pi_ref).")
    adaptive_kl: bool = Field(False, description="Adapt beta towards target_kl (Ziegler et al.).")
    target_kl: float = Field(
        6.0, gt=0, description="Per-sequence KL the adaptive controller aims at; the demo check's upper bound."
    )
    kl_horizon: int = Field(10000, ge=1, description="Adaptive controller horizon.")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k1", description="Per-token KL estimator in the reward.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda.")
    clip_range: float = Field(0.2, gt=0, description="Policy ratio clipping.")
    clip_range_value: float = Field(0.2, gt=0, description="Value clipping around the rollout values.")
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")
    whiten_advantages: bool = Field(True, description="Normalise advantages per batch.")
    missing_eos_penalty: float | None = Field(
        -1.0, description="Added to the score of a response that never emits eos. None: no penalty."
    )
    max_new_tokens: int = Field(16, ge=1, description="Response length limit.")
    temperature: float = Field(1.0, gt=0, description="Rollout sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Rollout nucleus sampling.")
    sample_every: int = Field(10, ge=1, description="Steps between sample tables (prompt, response, reward).")
