"""Stage `sft`: supervised fine-tuning of the base model on the validated instruction data.

Rows are tokenised here (alignflow.training.sft_data) so that the loss mask is explicit and
tested; TRL's SFTTrainer then trains on the pre-tokenised `input_ids`/`labels`. Optional multi-task
mixing fixes the training stream (alignflow.training.mixing) and an optional curriculum orders it
easy to hard (alignflow.training.curriculum). Checkpoints live outside the stage folder
(`.alignflow/checkpoints/sft/<key>/`), so an interrupted run resumes from its last checkpoint when
rerun, with the interrupted run's metric curve carried over; a finished run deletes them. LoRA
adapters are merged into a plain model folder, which gets a model card and a registry entry.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import mlflow
import pandas as pd

from alignflow.errors import DataError
from alignflow.models.loading import Placement, resolve_placement, trainer_precision
from alignflow.pipeline.stage import InstructionData, ModelRef, StageOutput, StageRun, stage
from alignflow.schemas.stages.sft import SFTStageConfig
from alignflow.tracking.model_card import publish_model
from alignflow.tracking.plots import line_plot
from alignflow.training.checkpoints import (
    carry_over_metrics,
    checkpoint_dir,
    remove_checkpoints,
    resume_point,
)
from alignflow.training.sft_data import prompt_template, tokenize_table


def trainer_arguments(settings: SFTStageConfig, output_dir: Path, seed: int, has_validation: bool,
                      placement: Placement | None = None):
    """TRL's SFTConfig for the stage's settings, on `placement` (default: the automatic one)."""
    from trl import SFTConfig

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
        include_num_input_tokens_seen="non_padding",
        **trainer_precision(placement or resolve_placement(), settings.gradient_checkpointing),
    )


def stream_length(settings: SFTStageConfig) -> int:
    """Examples the trainer consumes: steps x batch x accumulation (one device)."""
    return settings.max_steps * settings.batch_size * settings.gradient_accumulation_steps


def training_stream(origins: list[dict], settings: SFTStageConfig, seed: int) -> tuple[list[int], list]:
    """Row indices of the training stream and the effective mix (mixing off: every row in turn)."""
    from alignflow.training.mixing import MixSettings, mix_stream

    mixing = settings.mixing
    mix = MixSettings() if mixing is None else MixSettings(mixing.cap, mixing.temperature, mixing.task_weights,
                                                           mixing.source_weights)
    return mix_stream([o["task"] for o in origins], [o["source"] for o in origins], stream_length(settings), mix,
                      seed)


def difficulty_scorer(settings: SFTStageConfig, examples: list[dict], origins: list[dict], stream: list[int],
                      model):
    """score(positions) -> difficulty of the stream positions, by the curriculum's order_by."""
    from alignflow.training.curriculum import example_losses

    curriculum = settings.curriculum
    if curriculum.order_by == "difficulty":
        per_row = [curriculum.task_difficulty.get(o["task"], curriculum.default_difficulty) for o in origins]
    elif curriculum.order_by == "length":
        per_row = [float(len(e["input_ids"])) for e in examples]
    else:
        per_row = example_losses(model, examples, settings.batch_size)
    return lambda positions: [per_row[stream[p]] for p in positions]


def current_loss_scorer(trainer, examples: list[dict], stream: list[int], batch_size: int):
    """score(positions) -> the training model's loss now, each distinct row scored once."""
    from alignflow.training.curriculum import example_losses

    def score(positions: list[int]) -> list[float]:
        rows = sorted({stream[p] for p in positions})
        losses = dict(zip(rows, example_losses(trainer.model, [examples[r] for r in rows], batch_size), strict=True))
        return [losses[stream[p]] for p in positions]

    return score


def log_mix(shares: list, out_dir: Path) -> dict[str, float]:
    table = pd.DataFrame([asdict(share) for share in shares])
    table.to_csv(out_dir / "mixing.csv", index=False)
    mlflow.log_table(table, artifact_file="mixing.json")
    metrics = {}
    for share in shares:
        metrics[f"mix_rate/{share.task}"] = share.rate
        metrics[f"mix_epochs/{share.task}"] = share.epochs
    return metrics


@stage("sft", result=ModelRef, loads_models=True)
def train_sft(cfg: SFTStageConfig, pretrain: ModelRef, validate: InstructionData, run: StageRun) -> StageOutput:
    """Supervised fine-tuning (full or LoRA) with loss on responses only."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from transformers.utils import logging as transformers_logging

    from alignflow.models.loading import load_causal_lm, load_tokenizer, save_model, stage_placement
    from alignflow.tracking.runs import log_models, log_tokenizer_setup, read_input
    from alignflow.training.callbacks import MlflowMetrics, ProgressBar
    from alignflow.training.curriculum import CurriculumSampler
    from alignflow.training.lora import lora_config
    from alignflow.training.sft_trainer import AlignflowSFTTrainer
    from alignflow.training.stability import ReduceLROnPlateau

    transformers_logging.disable_progress_bar()  # per-checkpoint "writing shards" bars are noise here
    settings, seed = cfg, run.config.seed
    base = pretrain.model
    data = validate.outputs
    placement = stage_placement(run.config)
    tokenizer = load_tokenizer(base, run.config.chat_template)
    log_tokenizer_setup(tokenizer)
    template = prompt_template(settings, tokenizer)
    examples, origins, dropped_train = tokenize_table(read_input(data, "train", "training"), tokenizer, template,
                                                      settings.max_length)
    validation, _, dropped_val = tokenize_table(read_input(data, "validation", "validation"), tokenizer, template,
                                                settings.max_length)
    if not examples:
        raise DataError(f"sft: no training example left from {data['train']} (all {dropped_train} rows lost their "
                         f"response to truncation at max_length={settings.max_length})")
    overrides = {"attention_dropout": settings.dropout} if settings.dropout is not None else {}
    model = load_causal_lm(base, placement, trainable=True, **overrides)
    log_models(policy=model)
    peft_config = None
    if settings.method == "lora":
        peft_config = lora_config(settings.lora, model)

    metrics: dict[str, float] = {}
    stream, sampler, phases_seen = None, None, []
    if settings.mixing is not None or settings.curriculum is not None:
        stream, shares = training_stream(origins, settings, seed)
        metrics |= log_mix(shares, run.out_dir)
        train = Dataset.from_list([examples[i] for i in stream])
    else:
        train = Dataset.from_list(examples)

    checkpoints = checkpoint_dir(run.config, "sft", run.out_dir)
    resume_from, resume_step = resume_point(checkpoints)
    carry_over_metrics(checkpoints, mlflow.active_run().info.run_id, resume_step)
    metrics_callback = MlflowMetrics()
    callbacks = [metrics_callback, ProgressBar("sft")]
    plateau = None
    if settings.plateau is not None:
        p = settings.plateau
        plateau = ReduceLROnPlateau(p.factor, p.patience, p.threshold, p.min_lr)
        callbacks.append(plateau)
    trainer_kwargs = {}
    if settings.curriculum is not None:
        sampler = CurriculumSampler(len(stream), settings.curriculum.phases,
                                    difficulty_scorer(settings, examples, origins, stream, model),
                                    seed=seed,
                                    on_phase=lambda index, positions: phases_seen.append((index, positions)))
        trainer_kwargs["train_sampler"] = sampler
    trainer = AlignflowSFTTrainer(
        model=model,
        args=trainer_arguments(settings, checkpoints, seed, len(validation) > 0, placement),
        train_dataset=train,
        eval_dataset=Dataset.from_list(validation) if validation else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
        **trainer_kwargs,
    )
    trainer.remove_callback(PrinterCallback)  # the progress bar and MLflow show the logs
    if sampler is not None and settings.curriculum.adaptive:
        sampler.rescore = current_loss_scorer(trainer, examples, stream, settings.batch_size)
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    remove_checkpoints(checkpoints)
    model_dir = run.out_dir / "model"
    trained = trainer.model.merge_and_unload() if settings.method == "lora" else trainer.model
    save_model(trained, tokenizer, model_dir)
    history = metrics_callback.history
    line_plot(run.out_dir / "loss_curve.png", "SFT loss", "step", "loss",
              {"train": history.get("loss", []), "validation": history.get("eval_loss", [])})
    mlflow.log_artifact(str(run.out_dir / "loss_curve.png"))
    if phases_seen:
        write_phases(run.out_dir / "curriculum.json", phases_seen, stream, origins)
        mlflow.log_artifact(str(run.out_dir / "curriculum.json"))
    headline = {"train_loss": float(result.training_loss)}
    if history.get("eval_loss"):
        headline["validation_loss"] = history["eval_loss"][-1][1]
    metrics = {**headline, "train_examples": len(examples), "dropped_too_long": dropped_train + dropped_val,
               "resumed_from_step": float(resume_step), "global_step": float(trainer.state.global_step), **metrics}
    if plateau is not None:
        metrics["lr_reductions"] = float(plateau.reductions)
    metrics = publish_model(run, model_dir, title="SFT model", base_model=base, metrics=metrics,
                            register=settings.register_model,
                            summary=f"Supervised fine-tuning ({settings.method}) of `{base}` on the validated "
                            "instruction data, loss on response tokens only.")
    return StageOutput(outputs={"model": str(model_dir)}, metrics=metrics)


def write_phases(path: Path, phases: list[tuple[int, list[int]]], stream: list[int], origins: list[dict]) -> None:
    """Which tasks each curriculum phase trained on (the last pass over the stream)."""
    last = {index: positions for index, positions in phases}
    summary = [{"phase": index, "examples": len(positions),
                "tasks": pd.Series([origins[stream[p]]["task"] for p in positions]).value_counts().to_dict()}
               for index, positions in sorted(last.items())]
    path.write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
