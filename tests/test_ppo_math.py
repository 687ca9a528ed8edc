"""The PPO maths against numbers worked out by hand (float64, so equalities are exact or near)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from alignflow.rl.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    RolloutBatch,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    eos_penalty,
    explained_variance,
    first_eos_mask,
    gae,
    kl_k1,
    kl_k2,
    kl_k3,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    per_token_rewards,
)


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def close(actual: torch.Tensor, expected) -> None:
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------- container

def test_rollout_batch_is_frozen_and_knows_its_batch_size():
    batch = RolloutBatch(
        query_ids=torch.zeros(3, 4, dtype=torch.long), query_mask=torch.ones(3, 4), response_ids=torch.zeros(3, 5, dtype=torch.long),
        response_mask=torch.ones(3, 5), logprobs=torch.zeros(3, 5), ref_logprobs=torch.zeros(3, 5),
        values=torch.zeros(3, 5), scores=torch.zeros(3),
    )
    assert batch.batch_size == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.scores = torch.ones(3)


# ---------------------------------------------------------------------------------------- masked stats

def test_masked_mean_skips_masked_entries_overall_and_per_row():
    x = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = t([[1, 1, 0], [1, 0, 0]])
    close(masked_mean(x, mask), (1 + 2 + 4) / 3)
    close(masked_mean(x, mask, dim=1), [(1 + 2) / 2, 4.0])
    close(masked_mean(x, mask.bool()), (1 + 2 + 4) / 3)  # a bool mask works too


def test_masked_var_biased_and_unbiased():
    x = t([[1.0, 3.0, 5.0, 1000.0]])
    mask = t([[1, 1, 1, 0]])
    # mean 3, squared deviations 4, 0, 4
    close(masked_var(x, mask, unbiased=False), (4 + 0 + 4) / 3)
    close(masked_var(x, mask), (4 + 0 + 4) / 2)
    with pytest.raises(ValueError):
        masked_var(x, t([[1, 0, 0, 0]]))


def test_masked_whiten_uses_only_masked_entries():
    x = t([[1.0, 3.0], [5.0, 1000.0]])
    mask = t([[1, 1], [1, 0]])
    # masked mean 3, unbiased var (4 + 0 + 4) / 2 = 4, std 2; the 1000 must not enter either
    std = math.sqrt(4 + 1e-8)
    out = masked_whiten(x, mask)
    close(out[mask.bool()], [(1 - 3) / std, (3 - 3) / std, (5 - 3) / std])
    close(masked_mean(out, mask), 0.0)
    out = masked_whiten(x, mask, shift_mean=False)
    close(out[mask.bool()], [(1 - 3) / std + 3, 3.0, (5 - 3) / std + 3])


# ---------------------------------------------------------------------------------------- KL

def test_kl_estimators_by_hand():
    logp, ref = t([math.log(0.5), math.log(0.25)]), t([math.log(0.25), math.log(0.5)])
    close(kl_k1(logp, ref), [math.log(2), -math.log(2)])
    close(kl_k2(logp, ref), [0.5 * math.log(2) ** 2, 0.5 * math.log(2) ** 2])
    # k3 = (q/p - 1) - log(q/p): q/p = 0.5, then 2
    close(kl_k3(logp, ref), [(0.5 - 1) - math.log(0.5), (2 - 1) - math.log(2)])


def test_k1_and_k3_average_to_the_true_kl_and_k3_is_never_negative():
    p, q = t([0.5, 0.25, 0.25]), t([0.25, 0.5, 0.25])
    true_kl = 0.5 * math.log(2) + 0.25 * math.log(0.5) + 0.25 * math.log(1)  # sum p log(p/q)
    close((p * kl_k1(p.log(), q.log())).sum(), true_kl)
    close((p * kl_k3(p.log(), q.log())).sum(), true_kl)
    assert (kl_k1(p.log(), q.log()) < 0).any()  # k1 goes negative on some tokens, k3 must not

    generator = torch.Generator().manual_seed(0)
    logp, ref = torch.randn(1000, generator=generator) * 3, torch.randn(1000, generator=generator) * 3
    assert (kl_k3(logp, ref) >= 0).all()
    assert (kl_k2(logp, ref) >= 0).all()
    close(kl_k3(logp, logp), torch.zeros(1000))


def test_per_token_rewards_penalise_kl_and_put_the_score_on_the_last_real_token():
    scores = t([1.0, -2.0])
    logprobs = t([[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]])
    ref_logprobs = t([[-1.5, -1.0, -0.5], [-1.0, -2.0, -3.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    rewards, kl = per_token_rewards(scores, logprobs, ref_logprobs, mask, kl_coef=0.1)
    # k1 = logp - ref: row 0 [0.5, 0, -0.5]; row 1 [-1, 0, (1, masked)]
    close(kl, [[0.5, 0.0, -0.5], [-1.0, 0.0, 0.0]])
    close(rewards, [
        [-0.1 * 0.5, 0.0, -0.1 * -0.5 + 1.0],
        [-0.1 * -1.0, 0.0 + -2.0, 0.0],  # row 1 ends at index 1: its score goes there
    ])


def test_per_token_rewards_with_k3_and_a_bool_mask():
    scores = t([3.0])
    logprobs, ref_logprobs = t([[math.log(0.5), math.log(0.25)]]), t([[math.log(0.25), math.log(0.5)]])
    rewards, kl = per_token_rewards(scores, logprobs, ref_logprobs, torch.tensor([[True, True]]), 0.2, "k3")
    k3 = [(0.5 - 1) - math.log(0.5), (2 - 1) - math.log(2)]
    close(kl, [k3])
    close(rewards, [[-0.2 * k3[0], -0.2 * k3[1] + 3.0]])
    with pytest.raises(ValueError):
        per_token_rewards(scores, logprobs, ref_logprobs, torch.ones(1, 2), 0.2, "k9")


# ---------------------------------------------------------------------------------------- GAE

def test_gae_by_hand_with_a_shorter_row():
    gamma, lam = 0.9, 0.5
    rewards = t([[1.0, 0.0, 2.0], [1.0, 3.0, 9.0]])
    values = t([[0.5, 1.0, 1.5], [0.5, 2.0, 7.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    advantages, returns = gae(rewards, values, mask, gamma, lam)

    # row 0, full length: the value after the last token is 0
    d2 = 2.0 + gamma * 0.0 - 1.5
    d1 = 0.0 + gamma * 1.5 - 1.0
    d0 = 1.0 + gamma * 1.0 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    # row 1 ends at index 1: the reward 9 and value 7 beyond it are padding and must not count
    e1 = 3.0 + gamma * 0.0 - 2.0
    e0 = 1.0 + gamma * 2.0 - 0.5
    b1 = e1
    b0 = e0 + gamma * lam * b1

    close(advantages, [[a0, a1, a2], [b0, b1, 0.0]])
    close(returns, [[a0 + 0.5, a1 + 1.0, a2 + 1.5], [b0 + 0.5, b1 + 2.0, 0.0]])
    close(advantages[0], [1.65875, 0.575, 0.5])  # the same numbers, written out


def test_gae_limits_lambda_one_is_monte_carlo_and_lambda_zero_is_one_step_td():
    rewards, values, mask = t([[1.0, 0.0, 2.0]]), t([[0.5, 1.0, 1.5]]), t([[1, 1, 1]])
    gamma = 0.9
    advantages, returns = gae(rewards, values, mask, gamma, lam=1.0)
    close(returns, [[1.0 + gamma * 0.0 + gamma**2 * 2.0, 0.0 + gamma * 2.0, 2.0]])  # discounted reward-to-go
    advantages, _ = gae(rewards, values, mask, gamma, lam=0.0)
    close(advantages, [[1.0 + gamma * 1.0 - 0.5, 0.0 + gamma * 1.5 - 1.0, 2.0 - 1.5]])


# ---------------------------------------------------------------------------------------- policy loss

@pytest.mark.parametrize(
    ("advantage", "ratio", "expected_loss", "clipped"),
    [
        (1.0, 1.5, -1.0 * 1.2, True),  # A > 0, ratio above 1 + eps: capped at 1.2, no gradient
        (1.0, 0.5, -1.0 * 0.5, False),  # A > 0, ratio below 1 - eps: unclipped, the worse of the two
        (-1.0, 1.5, 1.0 * 1.5, False),  # A < 0, ratio above: unclipped
        (-1.0, 0.5, 1.0 * 0.8, True),  # A < 0, ratio below 1 - eps: floored at 0.8, no gradient
        (2.0, 1.1, -2.0 * 1.1, False),  # inside the range: plain surrogate
    ],
)
def test_clipped_policy_loss_each_branch(advantage, ratio, expected_loss, clipped):
    old = t([[-1.0, -3.0]])
    new = (old + t([[math.log(ratio), 5.0]])).requires_grad_()  # the second token is padding
    mask = t([[1, 0]])
    loss, clip_fraction, approx_kl = clipped_policy_loss(new, old, t([[advantage, 100.0]]), mask, clip_range=0.2)
    close(loss.detach(), expected_loss)
    close(clip_fraction, 1.0 if clipped else 0.0)
    close(approx_kl, 0.5 * math.log(ratio) ** 2)
    loss.backward()
    # d(-A * exp(new - old)) / d new = -A * ratio where unclipped; 0 where clipped or padding
    close(new.grad, [[0.0 if clipped else -advantage * ratio, 0.0]])


def test_clipped_policy_loss_averages_over_real_tokens():
    ratios = [1.5, 0.5, 1.5, 0.5, 1.1, 3.0]
    old = t([[-1.0] * 6])
    new = old + t([[math.log(r) for r in ratios]])
    advantages = t([[1.0, 1.0, -1.0, -1.0, 2.0, 50.0]])
    mask = t([[1, 1, 1, 1, 1, 0]])
    loss, clip_fraction, approx_kl = clipped_policy_loss(new, old, advantages, mask, clip_range=0.2)
    close(loss, (-1.2 - 0.5 + 1.5 + 0.8 - 2.2) / 5)
    close(clip_fraction, 2 / 5)
    close(approx_kl, 0.5 * (2 * math.log(1.5) ** 2 + 2 * math.log(0.5) ** 2 + math.log(1.1) ** 2) / 5)


# ---------------------------------------------------------------------------------------- value loss

def test_clipped_value_loss_by_hand():
    old = t([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
    new = t([[1.5, 1.5, 0.9, -1.0, -1.0, 9.0]])
    returns = t([[1.0, 2.0, 3.0, 0.5, -2.0, -9.0]])
    mask = t([[1, 1, 1, 1, 1, 0]])
    loss, clip_fraction = clipped_value_loss(new, old, returns, mask, clip_range=0.2)
    # v_clipped = old + clamp(new - old, -0.2, 0.2) = [1.2, 1.2, 0.9, -0.2, -0.2]
    per_token = [
        max((1.5 - 1.0) ** 2, (1.2 - 1.0) ** 2),  # 0.25: clipping would lower the loss, so unclipped
        max((1.5 - 2.0) ** 2, (1.2 - 2.0) ** 2),  # 0.64: clipped
        max((0.9 - 3.0) ** 2, (0.9 - 3.0) ** 2),  # 4.41: inside the range
        max((-1.0 - 0.5) ** 2, (-0.2 - 0.5) ** 2),  # 2.25: unclipped
        max((-1.0 + 2.0) ** 2, (-0.2 + 2.0) ** 2),  # 3.24: clipped
    ]
    close(loss, 0.5 * sum(per_token) / 5)
    close(loss, 0.5 * (0.25 + 0.64 + 4.41 + 2.25 + 3.24) / 5)
    close(clip_fraction, 2 / 5)


# ---------------------------------------------------------------------------------------- from logits

def test_logprobs_from_logits_equals_manual_indexing():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 5, (2, 3), generator=generator)
    out = logprobs_from_logits(logits, labels)
    assert out.shape == (2, 3)
    for b in range(2):
        for r in range(3):
            close(out[b, r], torch.log_softmax(logits[b, r], dim=-1)[labels[b, r]])
    close(logprobs_from_logits(t([[[0.0, 0.0]]]), torch.tensor([[1]])), [[math.log(0.5)]])


def test_entropy_from_logits_by_hand():
    logits = t([[[0.0, 0.0, 0.0, 0.0], [math.log(0.25), math.log(0.75), -math.inf, -math.inf]]])
    out = entropy_from_logits(logits)
    assert out.shape == (1, 2)
    close(out, [[math.log(4), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]])


def test_explained_variance_by_hand():
    returns = t([[1.0, 2.0, 3.0, 100.0]])
    mask = t([[1, 1, 1, 0]])
    close(explained_variance(returns, returns, mask), 1.0)
    close(explained_variance(t([[2.0, 2.0, 2.0, 0.0]]), returns, mask), 0.0)  # a constant at the mean
    # residuals [-0.5, 0, 0.5]: variance 1/6 against the returns' 2/3
    close(explained_variance(t([[1.5, 2.0, 2.5, -50.0]]), returns, mask), 1 - (1 / 6) / (2 / 3))


# ---------------------------------------------------------------------------------------- KL coefficient

def test_adaptive_kl_controller_moves_towards_the_target_and_clips_the_error():
    controller = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10_000)
    controller.update(current_kl=12.0, n_steps=256)  # error 12/6 - 1 = 1, clipped to 0.2: coefficient up
    assert controller.value == pytest.approx(0.1 * (1 + 0.2 * 256 / 10_000))
    controller = AdaptiveKLController(0.1, 6.0, 10_000)
    controller.update(current_kl=torch.tensor(3.0), n_steps=256)  # error -0.5, clipped to -0.2: down
    assert controller.value == pytest.approx(0.1 * (1 - 0.2 * 256 / 10_000))
    controller = AdaptiveKLController(0.1, 6.0, 10_000)
    controller.update(current_kl=6.6, n_steps=256)  # error 0.1, inside the clip
    assert controller.value == pytest.approx(0.1 * (1 + 0.1 * 256 / 10_000))
    controller.update(current_kl=6.0, n_steps=256)  # on target: unchanged
    assert controller.value == pytest.approx(0.1 * (1 + 0.1 * 256 / 10_000))


def test_fixed_kl_controller_never_moves():
    controller = FixedKLController(0.05)
    controller.update(current_kl=100.0, n_steps=256)
    assert controller.value == 0.05


# ---------------------------------------------------------------------------------------- eos

def test_first_eos_mask_with_and_without_eos():
    eos = 2
    response_ids = torch.tensor([[5, 2, 2, 0], [5, 6, 7, 8], [2, 9, 9, 9], [5, 6, 7, 2]])
    assert first_eos_mask(response_ids, eos).tolist() == [
        [1, 1, 0, 0],  # through the first eos; the second (padding with the eos id) is out
        [1, 1, 1, 1],  # no eos: all real
        [1, 0, 0, 0],
        [1, 1, 1, 1],
    ]


def test_eos_penalty_only_hits_responses_without_eos():
    scores = t([1.0, 1.0, 0.5])
    response_ids = torch.tensor([[5, 2, 0], [5, 6, 7], [2, 0, 0]])
    out = eos_penalty(scores, response_ids, 2, penalty=-1.0)
    close(out, [1.0, 0.0, 0.5])
    close(scores, [1.0, 1.0, 0.5])  # not changed in place


def test_several_stop_ids_end_responses_for_masks_and_the_penalty():
    """Qwen-style: <|im_end|> (7) ends an assistant turn while eos is <|endoftext|> (2)."""
    response_ids = torch.tensor([[5, 7, 2, 0], [5, 6, 2, 9], [5, 6, 8, 9]])
    assert first_eos_mask(response_ids, [2, 7]).tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    assert first_eos_mask(response_ids, 2).tolist() == [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    close(eos_penalty(t([1.0, 1.0, 1.0]), response_ids, [7], penalty=-1.0), [1.0, 0.0, 0.0])
    close(eos_penalty(t([1.0, 1.0, 1.0]), response_ids, (2, 7), penalty=-1.0), [1.0, 1.0, 0.0])
