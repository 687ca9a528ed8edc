"""Stage `dpo`: direct preference optimisation of the SFT model on the preference pairs (TRL DPOTrainer).

The reference policy is the SFT model (a frozen copy, or the adapter-disabled model under LoRA).
Beyond TRL's implicit-reward metrics, the stage measures held-out preference accuracy and the
oracle's win rate of the DPO policy against the SFT policy on held-out prompts.
"""

from __future__ import annotations

import mlflow

from alignflow.errors import DataError
from alignflow.pipeline.stage import InstructionData, ModelRef, PreferenceData, StageOutput, StageRun, stage
from alignflow.schemas.stages.dpo import DPOStageConfig
from alignflow.tracking.model_card import publish_model
from alignflow.tracking.plots import line_plot
from alignflow.training.checkpoints import (
    carry_over_metrics,
    checkpoint_dir,
    remove_checkpoints,
    resume_point,
)


def final_evaluation(trainer, history: dict[str, list[tuple[int, float]]]) -> dict[str, float]:
    """Held-out metrics of the final policy: the last evaluation when it ran at the final step (so
    nothing is logged twice for one step), else a new one."""
    step = trainer.state.global_step
    last = {key: points[-1][1] for key, points in history.items() if key.startswith("eval_") and points[-1][0] == step}
    return last if "eval_rewards/accuracies" in last else trainer.evaluate()


@stage("dpo", result=ModelRef, loads_models=True)
def train_dpo(cfg: DPOStageConfig, sft: ModelRef, preferences: PreferenceData, reward_model: ModelRef | None = None,
              instructions: InstructionData | None = None, *, run: StageRun) -> StageOutput:
    """Direct preference optimisation of the SFT model (TRL DPOTrainer), the SFT model as reference.
    With a reward model configured, DPO's policy is also measured as PPO's is (held-out reward-model
    score and KL to SFT), which puts it on the same reward-KL frontier. With `sft_loss_coef`, the
    SFT loss on the validated instruction rows joins DPO's (alignflow.training.sft_loss)."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from transformers.utils import logging as transformers_logging
    from trl import DPOConfig, DPOTrainer

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
    from alignflow.training.lora import lora_config
    from alignflow.training.sft_loss import stage_replay, with_sft_loss

    transformers_logging.disable_progress_bar()
    pairs = preferences.outputs
    base = sft.model
    placement = stage_placement(run.config)
    tokenizer = load_tokenizer(base)
    log_tokenizer_setup(tokenizer)
    model = load_causal_lm(base, placement, trainable=True)
    columns = ["prompt", "chosen", "rejected"]
    train = Dataset.from_pandas(read_input(pairs, "pairs_train", "training")[columns], preserve_index=False)
    if not len(train):
        raise DataError(f"dpo: {pairs['pairs_train']} holds no preference pair to train on")
    heldout_frame = read_input(pairs, "pairs_heldout", "evaluation")[columns]
    heldout = Dataset.from_pandas(heldout_frame, preserve_index=False) if len(heldout_frame) else None
    peft_config = None
    if cfg.method == "lora":
        peft_config = lora_config(cfg.lora, model)
    checkpoints = checkpoint_dir(run.config, "dpo", run.out_dir)
    resume_from, resume_step = resume_point(checkpoints)
    carry_over_metrics(checkpoints, mlflow.active_run().info.run_id, resume_step)
    metrics_callback = MlflowMetrics()
    args = DPOConfig(
        output_dir=str(checkpoints), beta=cfg.beta, loss_type=[cfg.loss_type],
        max_length=cfg.max_length, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, logging_steps=cfg.logging_steps,
        eval_strategy="steps" if heldout is not None else "no", eval_steps=cfg.eval_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2, seed=run.config.seed,
        **trainer_precision(placement, cfg.gradient_checkpointing))
    replay = stage_replay(run.method, cfg, instructions, run.config, tokenizer)
    trainer_class = DPOTrainer if replay is None else with_sft_loss(DPOTrainer)
    trainer = trainer_class(model=model, args=args, train_dataset=train, eval_dataset=heldout,
                            processing_class=tokenizer, peft_config=peft_config,
                            callbacks=[metrics_callback, ProgressBar("dpo")])
    trainer.sft_replay, trainer.sft_loss_coef = replay, cfg.sft_loss_coef
    trainer.remove_callback(PrinterCallback)
    log_models(policy=model)
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    remove_checkpoints(checkpoints)
    final_eval = final_evaluation(trainer, metrics_callback.history) if heldout is not None else {}

    out = run.out_dir
    model_dir = out / "model"
    policy = trainer.model.merge_and_unload() if cfg.method == "lora" else trainer.model
    save_model(policy, tokenizer, model_dir)
    metrics = {"train_loss": float(result.training_loss), "train_pairs": len(train),
               "resumed_from_step": float(resume_step)}
    if final_eval:
        metrics |= {"heldout_preference_accuracy": float(final_eval["eval_rewards/accuracies"]),
                    "heldout_reward_margin": float(final_eval["eval_rewards/margins"])}
    eval_prompts = read_input(pairs, "eval_prompts", "evaluation")
    if len(eval_prompts):
        reference = load_causal_lm(base, placement)
        log_models(reference=reference)
        duel, answers = compare_policies(policy, reference, tokenizer, eval_prompts,
                                         max_new_tokens=cfg.win_rate_max_new_tokens)
        answers.to_csv(out / "win_rate_answers.csv", index=False)
        mlflow.log_table(answers, artifact_file="win_rate_answers.json")
        metrics |= win_rate_metrics(duel) | {"oracle_wins": duel.wins, "oracle_losses": duel.losses,
                    "oracle_ties": duel.ties, "oracle_score_dpo": duel.score_a, "oracle_score_sft": duel.score_b,
                    "exact_match_dpo": duel.exact_a, "exact_match_sft": duel.exact_b}
        if reward_model is not None:
            scorer, _ = reward_model_and_tokenizer(reward_model.model, placement)
            metrics |= held_out_comparison(policy, reference, scorer, tokenizer, eval_prompts,
                                           max_new_tokens=cfg.heldout_max_new_tokens, policy_name="dpo")
    history = metrics_callback.history
    line_plot(out / "reward_margins.png", "DPO implicit reward margin", "step", "margin",
              {"train": history.get("rewards/margins", []), "held out": history.get("eval_rewards/margins", [])})
    mlflow.log_artifact(str(out / "reward_margins.png"), artifact_path="plots")
    metrics = publish_model(run, model_dir, title="DPO policy", base_model=base, metrics=metrics,
                            register=cfg.register_model,
                            summary=f"Direct preference optimisation ({cfg.loss_type} loss, beta {cfg.beta}) "
                            f"of the SFT model `{base}` on the pipeline's preference pairs; reference: the SFT model.")
    if "oracle_win_rate_vs_sft" in metrics:
        print(f"[dpo] oracle win rate vs SFT {metrics['oracle_win_rate_vs_sft']:.3f} "
              f"({metrics['oracle_wins']} wins, {metrics['oracle_losses']} losses, {metrics['oracle_ties']} ties)",
              flush=True)
    return StageOutput(outputs={"model": str(model_dir)}, metrics=metrics)
