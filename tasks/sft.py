"""Stage `sft`: supervised fine-tuning of the base model on the validated instruction data.

Rows are tokenised here (alignflow.training.sft_data) so that the loss mask is explicit and
tested; TRL's SFTTrainer then trains on the pre-tokenised `input_ids`/`labels`. Checkpoints live
outside the stage folder (`.alignflow/checkpoints/sft/<key>/`), so an interrupted run resumes
from its last checkpoint when rerun; a finished run deletes them. LoRA adapters are merged into a plain model folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
from prefect import task

from alignflow.data.tables import read_table
from alignflow.plots import line_plot
from alignflow.runner import STAGE_TASK_OPTIONS, execute_stage
from alignflow.schemas.config import PipelineConfig, SFTStageConfig
from alignflow.stage import Stage, StageContext, StageOutput
from alignflow.training.sft_data import IGNORE, PromptTemplate, tokenize_row


def sft_section(config: PipelineConfig) -> dict | None:
    settings = config.stages.sft
    return None if settings is None else {"seed": config.seed, **settings.model_dump(mode="json")}


def tokenize_table(path: str, tokenizer, template: PromptTemplate, max_length: int):
    """(datasets.Dataset of input_ids/labels, number of rows dropped because truncation left no response token)."""
    from datasets import Dataset

    rows, dropped = [], 0
    for row in read_table(path).to_dict(orient="records"):
        encoded = tokenize_row(row, tokenizer, template)
        encoded = {key: values[:max_length] for key, values in encoded.items()}
        if all(label == IGNORE for label in encoded["labels"]):
            dropped += 1
            continue
        rows.append(encoded)
    return Dataset.from_list(rows), dropped


def checkpoint_dir(config: PipelineConfig, stage: str, out_dir: Path) -> Path:
    return Path(config.cache.dir).resolve().parent / "checkpoints" / stage / out_dir.name


def trainer_arguments(settings: SFTStageConfig, output_dir: Path, seed: int, has_validation: bool):
    import torch
    from trl import SFTConfig

    on_gpu = torch.cuda.is_available()
    return SFTConfig(
        output_dir=str(output_dir),
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_steps,
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        max_length=settings.max_length,
        logging_steps=settings.logging_steps,
        eval_strategy="steps" if has_validation else "no",
        eval_steps=settings.eval_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=2,
        seed=seed,
        use_cpu=not on_gpu,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        activation_checkpointing=False,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def run_sft(context: StageContext) -> StageOutput:
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from alignflow.training.callbacks import MlflowMetrics, ProgressBar

    settings: SFTStageConfig = context.config.stages.sft
    base = context.upstream["pretrain"]["outputs"]["model"]
    data = context.upstream["validate"]["outputs"]
    tokenizer = AutoTokenizer.from_pretrained(base)
    template = PromptTemplate(settings.prompt_with_input, settings.prompt_without_input)
    train, dropped_train = tokenize_table(data["train"], tokenizer, template, settings.max_length)
    validation, dropped_val = tokenize_table(data["validation"], tokenizer, template, settings.max_length)
    overrides = {"attention_dropout": settings.dropout} if settings.dropout is not None else {}
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, **overrides)
    peft_config = None
    if settings.method == "lora":
        peft_config = PeftLoraConfig(r=settings.lora.r, lora_alpha=settings.lora.alpha,
                                     lora_dropout=settings.lora.dropout,
                                     target_modules=list(settings.lora.target_modules), task_type="CAUSAL_LM")
    checkpoints = checkpoint_dir(context.config, "sft", context.out_dir)
    metrics_callback = MlflowMetrics()
    trainer = SFTTrainer(
        model=model,
        args=trainer_arguments(settings, checkpoints, context.config.seed, len(validation) > 0),
        train_dataset=train,
        eval_dataset=validation if len(validation) else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[metrics_callback, ProgressBar("sft")],
    )
    resume = any(checkpoints.glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if resume else None)

    shutil.rmtree(checkpoints, ignore_errors=True)  # finished: a later forced rerun starts afresh
    model_dir = context.out_dir / "model"
    trained = trainer.model.merge_and_unload() if settings.method == "lora" else trainer.model
    trained.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    history = metrics_callback.history
    line_plot(context.out_dir / "loss_curve.png", "SFT loss", "step", "loss",
              {"train": history.get("loss", []), "validation": history.get("eval_loss", [])})
    mlflow.log_artifact(str(context.out_dir / "loss_curve.png"))
    mlflow.log_artifacts(str(model_dir), artifact_path="model")
    metrics = {"train_loss": float(result.training_loss), "train_examples": len(train),
               "dropped_too_long": dropped_train + dropped_val, "resumed": float(resume)}
    if history.get("eval_loss"):
        metrics["validation_loss"] = history["eval_loss"][-1][1]
    return StageOutput(outputs={"model": str(model_dir)}, metrics=metrics)


STAGE = Stage(
    name="sft",
    upstream=("pretrain", "validate"),
    section=sft_section,
    run=run_sft,
    code=("alignflow.tasks.sft", "alignflow.training.sft_data", "alignflow.training.callbacks"),
    description="Supervised fine-tuning (full or LoRA) with loss on responses only.",
)


@task(name="sft", **STAGE_TASK_OPTIONS)
def sft_task(request: dict) -> dict:
    return execute_stage(STAGE, request)
