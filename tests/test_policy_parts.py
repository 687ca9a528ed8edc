"""Pieces the preference stages share: batched sampling, the judge, reward scoring, head-to-head."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_llama_config
from transformers import LlamaForCausalLM, LlamaForSequenceClassification

from alignflow.data.annotation import judge_scores
from alignflow.evaluation.comparisons import head_to_head
from alignflow.models.generation import generate_responses
from alignflow.training.reward import finite_margins, pair_accuracy, score_texts


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    return tiny_tokenizer  # the session's (conftest.py)


def _config(tokenizer, **extra):
    return tiny_llama_config(tokenizer, **extra)


@pytest.fixture(scope="module")
def policy(tokenizer):
    torch.manual_seed(0)
    return LlamaForCausalLM(_config(tokenizer)).eval()


@pytest.fixture(scope="module")
def reward_model(tokenizer):
    torch.manual_seed(1)
    return LlamaForSequenceClassification(_config(tokenizer, num_labels=1)).eval()


PROMPTS = ["指令：计算两个数的和\n输入：3, 4\n输出：", "Input: apple\nOutput:", "是"]


def test_greedy_answers_do_not_depend_on_the_batch(policy, tokenizer):
    together = generate_responses(policy, tokenizer, PROMPTS, max_new_tokens=6, batch_size=3)
    alone = [generate_responses(policy, tokenizer, [p], max_new_tokens=6)[0] for p in PROMPTS]
    assert [r[0].text for r in together] == [r[0].text for r in alone]


def test_generation_shows_a_progress_bar_counting_prompts(policy, tokenizer, capsys):
    generate_responses(policy, tokenizer, PROMPTS, max_new_tokens=2, batch_size=2, progress="sampling")
    bar = capsys.readouterr().err
    assert "sampling" in bar and "3/3" in bar and "prompt/s" in bar


def test_sampling_gives_k_responses_per_prompt_reproducibly(policy, tokenizer):
    first = generate_responses(policy, tokenizer, PROMPTS, num_samples=4, temperature=1.0, max_new_tokens=6, seed=3)
    again = generate_responses(policy, tokenizer, PROMPTS, num_samples=4, temperature=1.0, max_new_tokens=6, seed=3)
    assert [len(r) for r in first] == [4, 4, 4]
    assert first == again
    assert len({r.text for r in first[0]}) > 1, "temperature 1 gives different samples"
    with pytest.raises(ValueError, match="greedy"):
        generate_responses(policy, tokenizer, PROMPTS, num_samples=2, temperature=0.0)


def test_judge_score_is_the_yes_minus_no_log_probability(policy, tokenizer):
    rubric = "{prompt}{response}这个回答正确吗？答："
    scores = judge_scores(policy, tokenizer, PROMPTS[:2], ["7", "elppa"], rubric=rubric, yes="是", no="否")
    for prompt, response, score in zip(PROMPTS[:2], ["7", "elppa"], scores, strict=True):
        ids = tokenizer(rubric.format(prompt=prompt, response=response), add_special_tokens=False,
                        return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logp = policy(input_ids=ids).logits[0, -1].log_softmax(-1)
        yes, no = (tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in ("是", "否"))
        assert score == pytest.approx(float(logp[yes] - logp[no]), abs=1e-4)


def test_reward_scores_do_not_depend_on_padding(reward_model, tokenizer):
    texts = ["指令：计算两个数的和\n输入：3, 4\n输出：7", "Input: apple\nOutput: elppa elppa elppa"]
    together = score_texts(reward_model, tokenizer, texts, batch_size=2)
    alone = [score_texts(reward_model, tokenizer, [t])[0] for t in texts]
    assert together == pytest.approx(alone, abs=1e-5)
    assert pair_accuracy([1.0, 0.0, 2.0], [0.5, 0.0, 3.0]) == pytest.approx(1 / 3)


def test_a_reward_model_that_scores_a_pair_nan_is_stopped_with_the_count():
    from alignflow.training.stability import NonFiniteLoss

    assert finite_margins([1.0, 2.0], [0.5, 3.0], "heldout") == [0.5, -1.0]
    with pytest.raises(NonFiniteLoss, match="scores 2 of 3 heldout pairs NaN or infinite"):
        finite_margins([1.0, float("nan"), float("inf")], [0.0, 0.0, float("inf")], "heldout")


def test_the_group_methods_reward_function_reads_the_reward_model_as_ppo_does(reward_model, tokenizer):
    """GRPO/RLOO's reward of [prompt; completion ids] is PPO's sequence score of the same ids: at the
    eos when the response ended with one (as the reward model was trained), else at its last token."""
    from alignflow.rl.rollout import sequence_scores
    from alignflow.training.reward import reward_function

    prompts = ["指令：计算两个数的和\n输入：3, 4\n输出：", "Input: apple\nOutput:"]
    finished = tokenizer("7", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    cut_off = tokenizer(" elppa elppa", add_special_tokens=False)["input_ids"]
    rewards = reward_function(reward_model, tokenizer)(prompts, ["7", " elppa elppa"], [finished, cut_off])
    for prompt, ids, reward in zip(prompts, [finished, cut_off], rewards, strict=True):
        query = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        response = torch.tensor([ids])
        expected = sequence_scores(reward_model, query, torch.ones_like(query), response, torch.ones_like(response))
        assert reward == pytest.approx(float(expected[0]), abs=1e-5)
    assert rewards[0] == pytest.approx(score_texts(reward_model, tokenizer, [prompts[0] + "7"])[0], abs=1e-5)


def test_head_to_head_counts_wins_losses_and_ties():
    result = head_to_head(["7", "8", "x", "elppa"], ["7", "7", "9", "appel"], ["7", "7", "9", "elppa"])
    assert (result.wins, result.losses, result.ties) == (1, 2, 1)
    assert result.win_rate == pytest.approx((1 + 0.5) / 4)
    assert result.exact_a == 0.5 and result.exact_b == 0.75


def test_the_win_rate_interval_is_the_mean_outcome_interval_and_narrows_with_prompts():
    from alignflow.evaluation.comparisons import HeadToHead, win_rate_metrics
    from alignflow.evaluation.metrics import mean_interval

    few, many = HeadToHead(6, 2, 2, 0, 0, 0, 0), HeadToHead(60, 20, 20, 0, 0, 0, 0)
    low, high = few.win_rate_interval()
    assert (low, high) == pytest.approx(mean_interval([1.0] * 6 + [0.5] * 2 + [0.0] * 2))
    assert low < few.win_rate < high and high - low > 0.3
    many_low, many_high = many.win_rate_interval()
    assert many_high - many_low < (high - low) / 2.5  # about 1/sqrt(10) as wide
    assert HeadToHead(10, 0, 0, 0, 0, 0, 0).win_rate_interval() == (1.0, 1.0)
    metrics = win_rate_metrics(few)
    assert metrics["oracle_win_rate_ci_low"] == pytest.approx(low) and metrics["oracle_win_rate_vs_sft"] == 0.7


def test_mean_interval_by_hand():
    from alignflow.evaluation.metrics import mean_interval

    low, high = mean_interval([1.0, 2.0, 3.0, 4.0])  # sd 1.291, se 0.6455
    assert (low, high) == pytest.approx((2.5 - 1.959964 * 0.645497, 2.5 + 1.959964 * 0.645497), abs=1e-5)
    assert mean_interval([2.0]) == (2.0, 2.0)


def test_a_sampled_response_does_not_depend_on_its_batch_or_shard(policy, tokenizer):
    """Per-row seeds: the samples of a list are the samples of its shards, whatever the batch size,
    which is what lets a stage fan out over workers or ranks and keep its rows."""
    whole = generate_responses(policy, tokenizer, PROMPTS, num_samples=3, temperature=1.0, max_new_tokens=6,
                               seed=5, batch_size=3)
    shards = [generate_responses(policy, tokenizer, [p], num_samples=3, temperature=1.0, max_new_tokens=6, seed=5,
                                 first_index=i) for i, p in enumerate(PROMPTS)]
    assert [[r.text for r in rs] for rs in whole] == [[r.text for r in s[0]] for s in shards]
    other_seed = generate_responses(policy, tokenizer, PROMPTS, num_samples=3, temperature=1.0, max_new_tokens=6,
                                    seed=6)
    assert [[r.text for r in rs] for rs in other_seed] != [[r.text for r in rs] for rs in whole]


def test_seeded_sampling_draws_from_the_tempered_nucleus_distribution():
    from alignflow.models.generation import SeededSampling

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    draws = torch.tensor([int(SeededSampling([seed], 1.0, 1.0, "cpu")(None, logits).argmax()) for seed in range(4000)])
    frequencies = torch.bincount(draws, minlength=4).float() / len(draws)
    torch.testing.assert_close(frequencies, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03, rtol=0)
    nucleus = torch.tensor([int(SeededSampling([seed], 1.0, 0.7, "cpu")(None, logits).argmax()) for seed in range(2000)])
    assert set(nucleus.tolist()) == {0, 1}, "top_p 0.7 keeps the two tokens whose mass reaches 0.7"
