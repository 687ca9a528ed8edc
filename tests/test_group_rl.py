"""GRPO and RLOO (TRL, through alignflow's trainer set-up) raise a reward they can be checked against:
the share of responses that contain one of ten chosen tokens, as PPO's test does."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignflow.evaluation.sweep import torch_threads
from alignflow.models.loading import resolve_placement, trainer_precision
from alignflow.rl.group_rl import group_rl_trainer
from alignflow.schemas.stages.group_rl import GroupRLStageConfig

pytestmark = pytest.mark.slow

PROMPTS = ["指令：计算两个数的和\n输入：3, 4\n输出：", "Input: apple\nOutput:", "好", "指令：写这条评论的人满意吗？\n输入："]
CHOSEN = set(range(100, 110))  # a random tiny model emits one of them in about 1 of 5 short responses


def contains_chosen(completions, completion_ids, **_) -> list[float]:
    return [float(any(token in CHOSEN for token in ids)) for ids in completion_ids]


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_group_methods_raise_a_programmatic_reward(method, tiny_llama, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama, padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(tiny_llama)
    settings = GroupRLStageConfig(max_steps=12, batch_size=32, num_generations=8, learning_rate=3e-2, beta=0.0,
                                  warmup_steps=0, max_completion_length=6, logging_steps=1, save_steps=100)
    trainer = group_rl_trainer(method, policy, tokenizer, PROMPTS * 8, [contains_chosen], settings, tmp_path,
                               seed=0, precision=trainer_precision(resolve_placement("cpu", "float32")))
    with torch_threads(1):
        trainer.train()
    rewards = [log["reward"] for log in trainer.state.log_history if "reward" in log]
    assert len(rewards) == 12
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last >= first + 0.3, [round(r, 2) for r in rewards]


def test_the_sft_loss_term_reaches_trls_group_trainers(tiny_llama, tmp_path):
    from test_sft_loss import examples

    from alignflow.training.sft_loss import SFTReplay

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama, padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(tiny_llama)
    settings = GroupRLStageConfig(max_steps=6, batch_size=16, num_generations=4, learning_rate=1e-2, beta=0.0,
                                  warmup_steps=0, max_completion_length=4, logging_steps=1, save_steps=100,
                                  sft_loss_coef=1.0)
    replay = SFTReplay(examples(tokenizer), batch_size=4, pad_id=0, seed=0)
    trainer = group_rl_trainer("grpo", policy, tokenizer, PROMPTS * 4, [contains_chosen], settings, tmp_path,
                               seed=0, precision=trainer_precision(resolve_placement("cpu", "float32")),
                               replay=replay)
    with torch_threads(1):
        trainer.train()
    logged = [log["sft_loss"] for log in trainer.state.log_history if "sft_loss" in log]
    assert len(logged) == 6 and logged[-1] < logged[0] - 0.5, logged
