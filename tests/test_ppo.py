"""PPO on a tiny model: rollout log-probs match a fresh unpadded forward pass; PPO raises a
programmatic reward; a large KL coefficient keeps the policy near the reference."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny_llama_config
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from alignflow.rl.ppo_trainer import PPOTrainer
from alignflow.rl.rollout import rollout, sequence_scores
from alignflow.schemas.stages.ppo import PPOStageConfig

PROMPTS = ["指令：计算两个数的和\n输入：3, 4\n输出：", "Input: apple\nOutput:", "好", "指令：写这条评论的人满意吗？\n输入："]


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    return tiny_tokenizer  # the session's (conftest.py)


def config(tokenizer, **extra) -> LlamaConfig:
    return tiny_llama_config(tokenizer, num_hidden_layers=2, **extra)


def models(tokenizer, seed: int = 0):
    torch.manual_seed(seed)
    policy = LlamaForCausalLM(config(tokenizer))
    value = LlamaForSequenceClassification(config(tokenizer, num_labels=1))
    return policy, copy.deepcopy(policy), value


def token_reward(token_ids: int | list[int]):
    """+1 when the response contains one of `token_ids`: a reward the tests can compute exactly."""
    chosen = torch.tensor([token_ids] if isinstance(token_ids, int) else token_ids)

    def reward(query_ids, query_mask, response_ids, response_mask, texts):
        return (torch.isin(response_ids, chosen) & response_mask.bool()).any(1).float()
    return reward


def test_rollout_logprobs_equal_a_fresh_unpadded_forward_pass(tokenizer):
    policy, reference, value = models(tokenizer)
    torch.manual_seed(1)
    batch, texts = rollout(policy, reference, value, token_reward(5), tokenizer, PROMPTS, range(len(PROMPTS)),
                           max_new_tokens=6,
                           temperature=0.7, top_p=1.0)
    assert batch.query_mask[:, 0].tolist().count(0) >= 2, "prompts of different lengths are left-padded"
    for row, prompt in enumerate(PROMPTS):
        length = int(batch.response_mask[row].sum())
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        response = batch.response_ids[row, :length].tolist()
        ids = torch.tensor([prompt_ids + response])
        with torch.no_grad():
            logits = policy(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float() / 0.7
        expected = logits.log_softmax(-1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)
        torch.testing.assert_close(batch.logprobs[row, :length], expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(batch.ref_logprobs[row, :length], expected, atol=1e-5, rtol=0)
    assert len(texts) == len(PROMPTS)


def test_sequence_scores_read_the_last_real_token(tokenizer):
    _, _, value = models(tokenizer)
    query = torch.tensor([[0, 0, 7, 8], [5, 6, 7, 8]])
    query_mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    response = torch.tensor([[9, 10, 0], [9, 0, 0]])
    response_mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    scores = sequence_scores(value, query, query_mask, response, response_mask)
    with torch.no_grad():
        alone = [value.score(value.base_model(input_ids=torch.tensor([ids])).last_hidden_state)[0, -1, 0]
                 for ids in ([7, 8, 9, 10], [5, 6, 7, 8, 9])]
    torch.testing.assert_close(scores, torch.stack(alone).float(), atol=1e-5, rtol=0)


def train(tokenizer, token_id: int, **overrides) -> list[dict[str, float]]:
    policy, reference, value = models(tokenizer)
    settings = PPOStageConfig(**{"max_steps": 12, "batch_size": 32, "mini_batch_size": 16, "ppo_epochs": 2,
                                 "learning_rate": 1e-2, "kl_coef": 0.0, "max_new_tokens": 6, "temperature": 1.0,
                                 "missing_eos_penalty": None, **overrides})
    history: list[dict[str, float]] = []
    trainer = PPOTrainer(policy, reference, value, token_reward(token_id), tokenizer, PROMPTS, settings, seed=0)
    trainer.train(on_step=lambda step, metrics: history.append(metrics))
    return history


def common_token(tokenizer) -> list[int]:
    """Ten token ids: a random tiny model emits one of them in ~1 of 5 responses of 6 tokens."""
    return list(range(100, 110))


def test_ppo_raises_a_programmatic_reward(tokenizer):
    history = train(tokenizer, common_token(tokenizer))
    first = sum(h["reward_mean"] for h in history[:3]) / 3
    last = sum(h["reward_mean"] for h in history[-3:]) / 3
    assert last >= first + 0.3, [round(h["reward_mean"], 2) for h in history]
    assert all(0 <= h["policy_clip_fraction"] <= 1 for h in history)


def test_a_large_kl_coefficient_keeps_the_policy_near_the_reference(tokenizer):
    free = train(tokenizer, common_token(tokenizer), kl_coef=0.0)
    held = train(tokenizer, common_token(tokenizer), kl_coef=2.0)
    assert held[-1]["kl_mean"] < 0.5 * free[-1]["kl_mean"], (held[-1]["kl_mean"], free[-1]["kl_mean"])
    assert held[-1]["kl_mean"] < 1.0


def test_a_resumed_run_continues_exactly_where_the_checkpoint_left_off(tokenizer, tmp_path):
    """Rollouts are seeded by step, and a checkpoint holds weights, optimizer, step and KL
    coefficient: stopping after step 4 and resuming gives the uninterrupted run's steps 5 and 6."""
    settings = {"max_steps": 6, "batch_size": 8, "mini_batch_size": 4, "learning_rate": 1e-2, "max_new_tokens": 4,
                "missing_eos_penalty": None, "adaptive_kl": True, "kl_coef": 0.1, "target_kl": 1.0,
                "kl_horizon": 10}

    def run(steps: int, checkpoints=None) -> list[dict[str, float]]:
        policy, reference, value = models(tokenizer)
        history: list[dict[str, float]] = []
        trainer = PPOTrainer(policy, reference, value, token_reward(common_token(tokenizer)), tokenizer, PROMPTS,
                             PPOStageConfig(**{**settings, "max_steps": steps}), seed=0)
        trainer.train(on_step=lambda step, metrics: history.append({"step": step, **metrics}),
                      checkpoints=checkpoints, save_steps=2)
        return history

    uninterrupted = run(6)
    first = run(4, tmp_path)
    assert [h["step"] for h in first] == [1, 2, 3, 4] and (tmp_path / "step-4" / "state.json").is_file()
    resumed = run(6, tmp_path)
    assert [h["step"] for h in resumed] == [5, 6], "resumed from the step-4 checkpoint, not from step 0"
    for expected, got in zip(uninterrupted[4:], resumed, strict=True):
        for key in ("reward_mean", "kl_mean", "kl_coef", "policy_loss", "value_loss"):
            assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key


def test_a_non_finite_reward_stops_ppo_with_the_shared_non_finite_error(tokenizer, tmp_path):
    from alignflow.training.stability import NonFiniteLoss

    policy, reference, value = models(tokenizer)

    def broken(query_ids, query_mask, response_ids, response_mask, texts):
        return torch.full((response_ids.shape[0],), float("nan"))

    trainer = PPOTrainer(policy, reference, value, broken, tokenizer, PROMPTS,
                         PPOStageConfig(max_steps=2, batch_size=4, mini_batch_size=2, max_new_tokens=4), seed=0)
    with pytest.raises(NonFiniteLoss, match="at step 1"):
        trainer.train(checkpoints=tmp_path, save_steps=1)
    assert not any(tmp_path.glob("step-*")), "nothing is saved after a non-finite step"
