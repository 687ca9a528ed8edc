"""Stage `reward_model`: a Bradley-Terry reward model on the preference pairs (TRL RewardTrainer).

Initialised from the SFT model with a scalar head. The loss is -log σ(r(chosen) - r(rejected)),
optionally minus the pair's margin inside σ. Held-out pairs give the pair accuracy; the reward
spread and a histogram of chosen-minus-rejected margins show how separable they are.
"""

from __future__ import annotations

import mlflow
import numpy as np

from alignflow.data.tables import read_table
from alignflow.errors import DataError
from alignflow.pipeline.stage import ModelRef, PreferenceData, StageOutput, StageRun, stage
from alignflow.schemas.stages.reward_model import RewardModelConfig
from alignflow.tracking.logged_models import REWARD_MODEL_TASK
from alignflow.tracking.model_card import publish_model
from alignflow.tracking.plots import histogram, line_plot
from alignflow.training.checkpoints import (
    carry_over_metrics,
    checkpoint_dir,
    remove_checkpoints,
    resume_point,
)


def pair_dataset(pairs: dict[str, str], key: str, use_margin: bool, context: str):
    """The pairs table `pairs[key]` as a datasets.Dataset, logged as an input of the stage's run."""
    from datasets import Dataset

    from alignflow.tracking.runs import read_input

    frame = read_input(pairs, key, context)
    columns = ["prompt", "chosen", "rejected"] + (["margin"] if use_margin else [])
    return Dataset.from_pandas(frame[columns].reset_index(drop=True), preserve_index=False)


@stage("reward_model", result=ModelRef, loads_models=True)
def train_reward_model(cfg: RewardModelConfig, sft: ModelRef, preferences: PreferenceData,
                       run: StageRun) -> StageOutput:
    """Bradley-Terry reward model on the preference pairs (TRL RewardTrainer)."""
    from transformers import PrinterCallback
    from transformers.utils import logging as transformers_logging
    from trl import RewardConfig, RewardTrainer

    from alignflow.models.loading import (
        reward_model_and_tokenizer,
        save_model,
        stage_placement,
        trainer_precision,
    )
    from alignflow.tracking.runs import log_models, log_tokenizer_setup
    from alignflow.training.callbacks import MlflowMetrics, ProgressBar
    from alignflow.training.reward import finite_margins, pair_accuracy, score_texts

    transformers_logging.disable_progress_bar()
    settings = cfg
    pairs = preferences.outputs
    base = sft.model
    placement = stage_placement(run.config)
    model, tokenizer = reward_model_and_tokenizer(base, placement, trainable=True)
    log_models(reward=model)
    log_tokenizer_setup(tokenizer)
    train = pair_dataset(pairs, "pairs_train", settings.use_margin, "training")
    if not len(train):
        raise DataError(f"reward_model: {pairs['pairs_train']} holds no preference pair to train on")
    heldout = pair_dataset(pairs, "pairs_heldout", settings.use_margin, "evaluation")
    checkpoints = checkpoint_dir(run.config, "reward_model", run.out_dir)
    resume_from, resume_step = resume_point(checkpoints)
    carry_over_metrics(checkpoints, mlflow.active_run().info.run_id, resume_step)
    metrics_callback = MlflowMetrics()
    args = RewardConfig(
        output_dir=str(checkpoints), max_steps=settings.max_steps, per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size, learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_steps, weight_decay=settings.weight_decay, max_grad_norm=settings.max_grad_norm,
        max_length=settings.max_length, center_rewards_coefficient=settings.center_rewards_coefficient,
        logging_steps=settings.logging_steps, eval_strategy="steps" if len(heldout) else "no",
        eval_steps=settings.eval_steps, save_strategy="steps", save_steps=settings.save_steps, save_total_limit=2,
        seed=run.config.seed, **trainer_precision(placement, settings.gradient_checkpointing))
    trainer = RewardTrainer(model=model, args=args, train_dataset=train, eval_dataset=heldout if len(heldout) else None,
                            processing_class=tokenizer, callbacks=[metrics_callback, ProgressBar("reward_model")])
    trainer.remove_callback(PrinterCallback)
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    remove_checkpoints(checkpoints)

    out = run.out_dir
    model_dir = out / "model"
    save_model(trainer.model, tokenizer, model_dir)
    evaluation = read_table(pairs["pairs_heldout"]) if len(heldout) else read_table(pairs["pairs_train"])
    chosen = score_texts(trainer.model, tokenizer, list(evaluation["prompt"] + evaluation["chosen"]),
                         max_length=settings.max_length)
    rejected = score_texts(trainer.model, tokenizer, list(evaluation["prompt"] + evaluation["rejected"]),
                           max_length=settings.max_length)
    split = "heldout" if len(heldout) else "train"
    margins = finite_margins(chosen, rejected, split)
    rewards = np.array(chosen + rejected)
    metrics = {f"{split}_pair_accuracy": pair_accuracy(chosen, rejected), "train_loss": float(result.training_loss),
               "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
               "margin_mean": float(np.mean(margins)), f"{split}_pairs": len(evaluation),
               "train_pairs": len(train), "resumed_from_step": float(resume_step)}
    histogram(out / "margin_histogram.png", f"reward(chosen) - reward(rejected), {split} pairs", "margin", margins)
    history = metrics_callback.history
    line_plot(out / "loss_curve.png", "reward model loss", "step", "loss",
              {"train": history.get("loss", []), "held out": history.get("eval_loss", [])})
    for plot in ("margin_histogram.png", "loss_curve.png"):
        mlflow.log_artifact(str(out / plot), artifact_path="plots")
    metrics = publish_model(run, model_dir, title="reward model", base_model=base, metrics=metrics,
                            register=settings.register_model, task=REWARD_MODEL_TASK,
                            summary=f"Bradley-Terry reward model initialised from the SFT model `{base}` (scalar head, "
                            "the architecture's sequence classifier), trained on the pipeline's preference pairs.")
    print(f"[reward_model] {split} pair accuracy {metrics[f'{split}_pair_accuracy']:.3f} on {len(evaluation)} pairs",
          flush=True)
    return StageOutput(outputs={"model": str(model_dir)}, metrics=metrics)
