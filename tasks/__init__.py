"""Stages, one module each, in topological order (a stage comes after everything it reads)."""

from alignflow.tasks import (
    build,
    clean,
    dpo,
    evaluate,
    grpo,
    ppo,
    preferences,
    pretrain,
    reward_model,
    rloo,
    self_instruct,
    sft,
    validate,
)

# (stage, its Prefect task); data flow: build -> self_instruct -> clean -> validate; training flow:
# sft -> preferences -> reward_model -> ppo, and preferences -> dpo
PIPELINE = [
    (pretrain.STAGE, pretrain.pretrain_task),
    (build.STAGE, build.build_task),
    (self_instruct.STAGE, self_instruct.self_instruct_task),
    (clean.STAGE, clean.clean_task),
    (validate.STAGE, validate.validate_task),
    (sft.STAGE, sft.sft_task),
    (preferences.STAGE, preferences.preferences_task),
    (reward_model.STAGE, reward_model.reward_model_task),
    (dpo.STAGE, dpo.dpo_task),
    (ppo.STAGE, ppo.ppo_task),
    (grpo.STAGE, grpo.grpo_task),
    (rloo.STAGE, rloo.rloo_task),
    (evaluate.STAGE, evaluate.evaluate_task),  # keep last: it reads every model
]
