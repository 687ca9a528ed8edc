"""The SFT stage's section (tasks/sft.py): the trainer, LoRA, multi-task mixing, curricula, plateau cuts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from alignflow.schemas.trainer import CheckpointedTrainer, LoraSettings, Section, TrainerSettings, default


class MixingConfig(Section):
    """Multi-task mixing (T5/FLAN): per-task rates from size, cap, temperature and weights."""

    cap: int | None = Field(
        None, ge=1, description="Examples-proportional mixing cap K: a task counts as at most K rows. None: no cap."
    )
    temperature: float = Field(
        1.0, gt=0, description="Temperature sampling: rate ∝ min(rows, K) ** (1/T). 1: proportional; large: uniform."
    )
    task_weights: dict[str, float] = Field({}, description="Multiplier of a task's rate (tasks not listed: 1).")
    source_weights: dict[str, float] = Field(
        {}, description="Multiplier of rows by source prefix (seed, template, self_instruct, demo; not listed: 1)."
    )

    @field_validator("task_weights", "source_weights")
    @classmethod
    def _non_negative(cls, weights: dict[str, float]) -> dict[str, float]:
        negative = sorted(name for name, value in weights.items() if value < 0)
        if negative:
            raise ValueError(f"weights must be >= 0 (negative: {negative})")
        return weights


class CurriculumConfig(Section):
    """Progressive fine-tuning: phases from easy to hard."""

    order_by: Literal["difficulty", "length", "base_loss"] = Field(
        "length", description="difficulty: task_difficulty below; length: tokens; base_loss: the base model's "
        "loss on the example."
    )
    task_difficulty: dict[str, float] = Field(
        {}, description="order_by difficulty: declared difficulty per task (higher = harder)."
    )
    default_difficulty: float = Field(0.0, description="Difficulty of tasks not in task_difficulty.")
    phases: int = Field(3, ge=1, description="Number of phases (equal shares of the training stream).")
    adaptive: bool = Field(
        False, description="At each phase boundary, re-order the examples still ahead by the current model's loss."
    )


class PlateauConfig(Section):
    """Cut the learning rate when the validation loss stops improving."""

    factor: float = Field(0.5, gt=0, lt=1, description="Multiply the learning rate by this on a plateau.")
    patience: int = Field(2, ge=1, description="Evaluations without a new best validation loss before a cut.")
    threshold: float = Field(0.0, ge=0, description="An improvement smaller than this does not count.")
    min_lr: float = Field(0.0, ge=0, description="Never cut below this learning rate.")


class SFTStageConfig(CheckpointedTrainer):
    """Supervised fine-tuning on the validated instruction data (TRL SFTTrainer)."""

    max_steps: int = default(TrainerSettings, "max_steps", 200)
    batch_size: int = default(TrainerSettings, "batch_size", 8)
    learning_rate: float = default(TrainerSettings, "learning_rate", 5e-4)
    warmup_steps: int = default(TrainerSettings, "warmup_steps", 10)
    method: Literal["full", "lora"] = Field("full", description="full: update every weight; lora: adapters.")
    lora: LoraSettings = LoraSettings()
    prompt_with_input: str = Field(
        "指令：{instruction}\n输入：{input}\n输出：", description="Prompt template of basic rows that have an input."
    )
    prompt_without_input: str = Field("指令：{instruction}\n输出：", description="Prompt template of basic rows without input.")
    add_bos: bool = Field(
        False, description="Start basic-format prompts with the BOS token (models pretrained with BOS before every "
        "document, like the demo's). Chat formats follow their template."
    )
    max_length: int = Field(512, ge=8, description="Longest tokenised example; longer ones are cut at the end.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = Field(
        "cosine", description="Decay after warm-up."
    )
    dropout: float | None = Field(None, ge=0, lt=1, description="Override the model's attention dropout.")
    eval_steps: int = Field(25, ge=1, description="Steps between validation-loss evaluations.")
    plateau: PlateauConfig | None = Field(None, description="Learning-rate cuts on a validation-loss plateau.")
    mixing: MixingConfig | None = Field(
        None, description="Multi-task mixing. None: the data as it is (every row once per epoch)."
    )
    curriculum: CurriculumConfig | None = Field(None, description="Curriculum order. None: random order.")
