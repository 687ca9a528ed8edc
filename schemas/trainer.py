"""What every config section is (frozen, unknown keys rejected) and the trainer settings every
training stage shares under one set of names, and the LoRA settings of the stages that can train adapters.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo


class Section(BaseModel):
    """Base of every config section: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# Names earlier versions used for the trainer settings: an error says the new one.
RENAMED_FIELDS = {"steps": "max_steps", "grad_clip": "max_grad_norm", "log_every": "logging_steps"}


class TrainerSettings(Section):
    """What every trainer shares (pretraining, SFT, reward model, DPO, PPO, GRPO, RLOO), under the
    names transformers' TrainingArguments gives them; a stage's section holds them flat."""

    max_steps: int = Field(100, ge=1, description="Optimizer steps (PPO: rollout + update rounds).")
    batch_size: int = Field(16, ge=1, description="Examples (pairs, prompts) per device per step.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient-norm clipping threshold.")
    warmup_steps: int = Field(5, ge=0, description="Linear warm-up steps (PPO: none, its rate is constant).")
    logging_steps: int = Field(5, ge=1, description="Steps between logged metrics (PPO logs every step).")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            old = [key for key in data if key in RENAMED_FIELDS and RENAMED_FIELDS[key] in cls.model_fields]
            if old:
                raise ValueError("; ".join(f"{key} is now called {RENAMED_FIELDS[key]}" for key in old))
        return data


class CheckpointedTrainer(TrainerSettings):
    """A trainer that checkpoints (resumes after an interruption) and can trade compute for memory."""

    save_steps: int = Field(50, ge=1, description="Steps between checkpoints (resume after an interruption).")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, about a third more compute."
    )
    register_model: bool = Field(True, description="Add the model to the MLflow model registry.")


class PreferenceTrainer(CheckpointedTrainer):
    """A preference stage (DPO, PPO, GRPO, RLOO): its own objective, plus an optional SFT loss on the
    rows SFT trained on that keeps what SFT taught (alignflow.training.sft_loss)."""

    sft_loss_coef: float = Field(
        0.0, ge=0, description="Weight of the SFT loss on replayed SFT rows added to every step's loss (the "
        "alignment-tax mitigation, as InstructGPT's PPO-ptx); 0: off. Needs the instruction data as an input.",
    )
    sft_loss_batch_size: int = Field(8, ge=1, description="Replayed SFT rows per gradient step.")


def default(base: type[BaseModel], name: str, value: Any) -> Any:
    """`base`'s field `name` (its constraints and description) with another default."""
    return FieldInfo.merge_field_infos(base.model_fields[name], default=value)


class LoraSettings(Section):
    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA branch.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", min_length=1,
        description="Module names that get adapters (e.g. [q_proj, v_proj]; GPT-2 names them c_attn, c_proj), or "
        "all-linear: every linear layer but the output head, whatever the architecture calls them.",
    )
