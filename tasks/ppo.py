"""Stage `ppo`: PPO against the reward model with a per-token KL penalty to the SFT policy.

TRL removed its PPOTrainer; alignflow owns one (alignflow.rl). The policy and the frozen
reference start from the SFT model, the value model from the reward model; the reward model
scores whole responses. Prompts are the preference stage's training prompts; its held-out
prompts measure the result: the policy's mean reward-model score against the SFT policy's, its
KL to the SFT policy, and the oracle's win rate.
"""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import pandas as pd

from alignflow.errors import ConfigError, DataError
from alignflow.pipeline.stage import InstructionData, ModelRef, PreferenceData, StageOutput, StageRun, stage
from alignflow.schemas.stages.ppo import PPOStageConfig
from alignflow.tracking.model_card import publish_model
from alignflow.tracking.plots import line_plot
from alignflow.training.checkpoints import carry_over_metrics, checkpoint_dir, remove_checkpoints


def completed_step(checkpoints: Path) -> int:
    """Newest step with a complete PPO checkpoint (state.json is written last), 0 if none."""
    steps = [int(m.group(1)) for p in checkpoints.glob("step-*")
             if (m := re.fullmatch(r"step-(\d+)", p.name)) and (p / "state.json").is_file()]
    return max(steps, default=0)


def launched_accelerator(settings: PPOStageConfig, placement):
    """accelerate's Accelerator in a launched job (gloo on CPUs, NCCL on GPUs), None in one process."""
    from alignflow.distributed import world_size

    if world_size() == 1:
        return None
    for name in ("batch_size", "mini_batch_size"):
        if getattr(settings, name) % world_size():
            raise ConfigError(f"stages.ppo.{name} ({getattr(settings, name)}) must be a multiple of the launched "
                              f"job's {world_size()} processes")
    from accelerate import Accelerator

    return Accelerator(cpu=not placement.device.startswith("cuda"))


@stage("ppo", result=ModelRef, loads_models=True)
def train_ppo(cfg: PPOStageConfig, sft: ModelRef, reward_model: ModelRef, preferences: PreferenceData,
              instructions: InstructionData | None = None, *, run: StageRun) -> StageOutput:
    """PPO against the reward model with a per-token KL penalty to the SFT policy (and, with
    `sft_loss_coef`, the SFT loss on the validated instruction rows: PPO-ptx)."""
    from alignflow.evaluation.comparisons import compare_policies, held_out_comparison, win_rate_metrics
    from alignflow.models.loading import (
        load_causal_lm,
        load_reward_model,
        load_tokenizer,
        save_model,
        stage_placement,
    )
    from alignflow.progress import StepProgress
    from alignflow.rl.ppo_trainer import PPOTrainer
    from alignflow.rl.rollout import sequence_scores
    from alignflow.tracking.runs import log_models, log_tokenizer_setup, read_input
    from alignflow.training.sft_loss import stage_replay

    settings = cfg
    sft_path, reward_path = sft.model, reward_model.model
    preference_outputs = preferences.outputs
    placement = stage_placement(run.config)
    tokenizer = load_tokenizer(sft_path)
    log_tokenizer_setup(tokenizer)
    policy = load_causal_lm(sft_path, placement, trainable=True)
    reference = load_causal_lm(sft_path, placement).requires_grad_(False)
    reward_tokenizer = load_tokenizer(reward_path)  # value and reward models come from one folder
    value_model = load_reward_model(reward_path, placement, reward_tokenizer, trainable=True)
    reward_model = load_reward_model(reward_path, placement, reward_tokenizer)
    reward_model.requires_grad_(False)
    if settings.gradient_checkpointing:
        policy.gradient_checkpointing_enable()
        value_model.gradient_checkpointing_enable()
    log_models(policy=policy, reference=reference, value=value_model, reward=reward_model)
    prompts = sorted(set(read_input(preference_outputs, "pairs_train", "training")["prompt"]))
    if not prompts:
        raise DataError(f"ppo: no training prompt in {preference_outputs['pairs_train']}")

    def reward(query_ids, query_mask, response_ids, response_mask, texts):
        return sequence_scores(reward_model, query_ids, query_mask, response_ids, response_mask)

    accelerator = launched_accelerator(settings, placement)
    replay = stage_replay(run.method, settings, instructions, run.config, tokenizer)
    if replay is not None and accelerator is not None:  # each rank replays its own rows
        replay.rng.seed(run.config.seed + 1000 * accelerator.process_index)
    trainer = PPOTrainer(policy, reference, value_model, reward, tokenizer, prompts,
                         settings, run.config.seed, accelerator=accelerator, replay=replay)
    checkpoints = checkpoint_dir(run.config, "ppo", run.out_dir)
    resume_step = completed_step(checkpoints)
    carry_over_metrics(checkpoints, mlflow.active_run().info.run_id, resume_step)
    history: dict[str, list[tuple[int, float]]] = {}
    progress = StepProgress("ppo", total=settings.max_steps)
    progress.update(resume_step)

    def on_step(step: int, metrics: dict[str, float]) -> None:
        mlflow.log_metrics(metrics, step=step)
        for key, value in metrics.items():
            history.setdefault(key, []).append((step, value))
        progress.update(step, reward=metrics["reward_mean"], kl=metrics["kl_mean"])
        if step % settings.sample_every == 0 or step == settings.max_steps:
            mlflow.log_table(pd.DataFrame(trainer.samples), artifact_file=f"samples/step_{step:05d}.json")

    trainer.train(on_step=on_step, checkpoints=checkpoints, save_steps=settings.save_steps)
    progress.close()
    remove_checkpoints(checkpoints)

    out = run.out_dir
    model_dir = out / "model"
    save_model(policy, tokenizer, model_dir)
    metrics: dict[str, float] = {"final_reward_mean": history["reward_mean"][-1][1] if history else float("nan"),
                                 "resumed_from_step": float(resume_step)}
    eval_prompts = read_input(preference_outputs, "eval_prompts", "evaluation")
    if len(eval_prompts):
        metrics |= held_out_comparison(policy, reference, reward_model, tokenizer, eval_prompts,
                                       max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                                       top_p=settings.top_p)
        duel, answers = compare_policies(policy, reference, tokenizer, eval_prompts,
                                         max_new_tokens=settings.max_new_tokens)
        answers.to_csv(out / "win_rate_answers.csv", index=False)
        metrics |= win_rate_metrics(duel) | {"oracle_score_ppo": duel.score_a,
                    "oracle_score_sft": duel.score_b}
    for key, title in (("reward_mean", "PPO mean reward"), ("kl_mean", "KL to the reference (per sequence)")):
        line_plot(out / f"{key}.png", title, "step", key, {key: history.get(key, [])})
        mlflow.log_artifact(str(out / f"{key}.png"), artifact_path="plots")
    control = "adaptive" if settings.adaptive_kl else "fixed"
    metrics = publish_model(run, model_dir, title="PPO policy", base_model=sft_path, metrics=metrics,
                            register=settings.register_model,
                            summary=f"PPO (KL coefficient {settings.kl_coef}, {control}) of the SFT model "
                            f"`{sft_path}` against the reward model `{reward_path}`.")
    if "heldout_reward_ppo" in metrics:
        print(f"[ppo] held-out reward {metrics['heldout_reward_ppo']:.3f} (SFT {metrics['heldout_reward_sft']:.3f}), "
              f"KL to SFT {metrics['heldout_kl_to_sft']:.3f} per sequence", flush=True)
    return StageOutput(outputs={"model": str(model_dir)}, metrics=metrics)
