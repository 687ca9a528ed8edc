"""GRPO and RLOO through TRL, on the same footing as alignflow's PPO.

Same prompts (the preference stage's training prompts), same reward model read the same way (a
reward function scoring the [prompt; response] token ids at the response's eos, as PPO reads it;
alignflow.training.reward.reward_function), same reference (the SFT model), and the
same held-out measurement (reward-model score against the SFT policy, KL to it), so that the
three methods can be compared run by run in MLflow.
"""

from __future__ import annotations

import mlflow

from alignflow.pipeline.stage import StageOutput, StageResult, StageRun
from alignflow.schemas.stages.group_rl import GroupRLStageConfig
from alignflow.tracking.model_card import publish_model
from alignflow.training.checkpoints import (
    carry_over_metrics,
    checkpoint_dir,
    remove_checkpoints,
    resume_point,
)

METHODS = {"grpo": ("GRPOTrainer", "GRPOConfig", "GRPO (group-relative policy optimisation)"),
           "rloo": ("RLOOTrainer", "RLOOConfig", "RLOO (REINFORCE leave-one-out)")}


def group_rl_trainer(method: str, policy, tokenizer, prompts: list[str], rewards: list, settings: GroupRLStageConfig,
                     output_dir, *, seed: int, precision: dict, reward_tokenizers: list | None = None,
                     callbacks: list | None = None, replay=None):
    """TRL's GRPO or RLOO trainer of `policy` on `prompts` with `settings`; `rewards` are reward models
    (each with its tokenizer in `reward_tokenizers`) or functions `(completions, completion_ids, ...) ->
    list[float]`, as TRL takes them; `precision` is alignflow.models.loading.trainer_precision's; a
    `replay` (alignflow.training.sft_loss.SFTReplay) adds the SFT loss term at `settings.sft_loss_coef`."""
    import trl
    from datasets import Dataset

    from alignflow.training.sft_loss import with_sft_loss

    trainer_name, config_name, _ = METHODS[method]
    args = getattr(trl, config_name)(
        output_dir=str(output_dir), max_steps=settings.max_steps, per_device_train_batch_size=settings.batch_size,
        num_generations=settings.num_generations, learning_rate=settings.learning_rate, beta=settings.beta,
        warmup_steps=settings.warmup_steps, weight_decay=settings.weight_decay, max_grad_norm=settings.max_grad_norm,
        max_completion_length=settings.max_completion_length, temperature=settings.temperature,
        logging_steps=settings.logging_steps, save_strategy="steps", save_steps=settings.save_steps,
        save_total_limit=2, seed=seed, **precision)
    trainer_class = getattr(trl, trainer_name)
    if replay is not None:
        trainer_class = with_sft_loss(trainer_class)
    trainer = trainer_class(model=policy, reward_funcs=rewards, args=args, reward_processing_classes=reward_tokenizers,
                            train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer,
                            callbacks=callbacks)
    if replay is not None:
        trainer.sft_replay, trainer.sft_loss_coef = replay, settings.sft_loss_coef
    return trainer


def train_group_rl(settings: GroupRLStageConfig, sft: StageResult, reward_model: StageResult,
                   preferences: StageResult, instructions: StageResult | None, run: StageRun) -> StageOutput:
    """GRPO or RLOO (the stage's name says which) of the SFT model against the reward model."""
    from transformers import PrinterCallback
    from transformers.utils import logging as transformers_logging

    from alignflow.evaluation.comparisons import compare_policies, held_out_comparison, win_rate_metrics
    from alignflow.models.loading import (
        load_causal_lm,
        load_tokenizer,
        reward_model_and_tokenizer,
        save_model,
        stage_placement,
        trainer_precision,
    )
    from alignflow.tracking.runs import log_models, log_tokenizer_setup, read_input
    from alignflow.training.callbacks import MlflowMetrics, ProgressBar
    from alignflow.training.reward import reward_function
    from alignflow.training.sft_loss import stage_replay

    transformers_logging.disable_progress_bar()
    method = run.method
    trainer_name, _, title = METHODS[method]
    sft_path, reward_path = sft.outputs["model"], reward_model.outputs["model"]
    preference_outputs = preferences.outputs
    prompts = sorted(set(read_input(preference_outputs, "pairs_train", "training")["prompt"]))
    placement = stage_placement(run.config)
    tokenizer = load_tokenizer(sft_path)
    log_tokenizer_setup(tokenizer)
    tokenizer.padding_side = "left"
    policy = load_causal_lm(sft_path, placement, trainable=True)
    # The reward model goes to TRL loaded (on the placement, with its prepared tokenizer), not as a
    # folder TRL would load itself on the CPU in float32.
    reward_model, reward_tokenizer = reward_model_and_tokenizer(reward_path, placement)
    reward_model.requires_grad_(False)
    checkpoints = checkpoint_dir(run.config, method, run.out_dir)
    resume_from, resume_step = resume_point(checkpoints)
    carry_over_metrics(checkpoints, mlflow.active_run().info.run_id, resume_step)
    metrics_callback = MlflowMetrics()
    trainer = group_rl_trainer(method, policy, tokenizer, prompts, [reward_function(reward_model, reward_tokenizer)],
                               settings, checkpoints, seed=run.config.seed,
                               precision=trainer_precision(placement, settings.gradient_checkpointing),
                               callbacks=[metrics_callback, ProgressBar(method)],
                               replay=stage_replay(method, settings, instructions, run.config, tokenizer))
    trainer.remove_callback(PrinterCallback)
    log_models(policy=trainer.model, reward=reward_model)
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    remove_checkpoints(checkpoints)

    model_dir = run.out_dir / "model"
    tokenizer.padding_side = "right"
    save_model(trainer.model, tokenizer, model_dir)
    metrics = {"train_loss": float(result.training_loss), "prompts": len(prompts),
               "resumed_from_step": float(resume_step)}
    eval_prompts = read_input(preference_outputs, "eval_prompts", "evaluation")
    if len(eval_prompts):
        reference = load_causal_lm(sft_path, placement)
        log_models(reference=reference)
        metrics |= held_out_comparison(trainer.model, reference, reward_model, tokenizer, eval_prompts,
                                       max_new_tokens=settings.max_completion_length,
                                       temperature=settings.temperature, policy_name=method)
        duel, answers = compare_policies(trainer.model, reference, tokenizer, eval_prompts,
                                         max_new_tokens=settings.max_completion_length)
        answers.to_csv(run.out_dir / "win_rate_answers.csv", index=False)
        metrics |= win_rate_metrics(duel) | {f"oracle_score_{method}": duel.score_a,
                    "oracle_score_sft": duel.score_b}
    metrics = publish_model(run, model_dir, title=f"{method.upper()} policy", base_model=sft_path,
                            metrics=metrics, register=settings.register_model,
                            summary=f"{title} of the SFT model `{sft_path}` against the reward model `{reward_path}` "
                            f"(TRL {trainer_name}, beta {settings.beta}, {settings.num_generations} samples per prompt).")
    return StageOutput(outputs={"model": str(model_dir)}, metrics=metrics)
