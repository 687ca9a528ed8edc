"""The maths of PPO with a KL penalty for language models, one small pure function per step.

It follows Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences"), Ouyang et
al. 2022 (InstructGPT) and Huang et al. 2024 ("The N+ Implementation Details of RLHF with PPO").
The trainer is a loop over these functions; keeping them free of models, optimisers and state
means each can be checked against numbers worked out by hand (tests/test_ppo_math.py).

Conventions: B is the batch size, R the response length, V the vocabulary. Responses are
right-padded; `mask` is 1 on real response tokens (up to and including the eos token), 0 after.
Every per-token tensor is (B, R) and indexes response positions: `logprobs[:, t]` is the log-prob
of `response_ids[:, t]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

WHITEN_EPS = 1e-8


@dataclass(frozen=True)
class RolloutBatch:
    """What one rollout (generation plus scoring) hands to the PPO update."""

    query_ids: torch.Tensor  # (B, Q) prompt token ids, left-padded so every response starts at column Q
    query_mask: torch.Tensor  # (B, Q) 1 for real prompt tokens, 0 for left padding
    response_ids: torch.Tensor  # (B, R) sampled response token ids, right-padded
    response_mask: torch.Tensor  # (B, R) 1 for real response tokens (through the eos token), 0 for padding
    logprobs: torch.Tensor  # (B, R) log-probs of response_ids under the policy at rollout time
    ref_logprobs: torch.Tensor  # (B, R) log-probs of response_ids under the frozen reference model
    values: torch.Tensor  # (B, R) value-model estimates at each response position
    scores: torch.Tensor  # (B,) sequence-level reward from the reward model

    @property
    def batch_size(self) -> int:
        return self.response_ids.shape[0]


# ---------------------------------------------------------------------------------------- masked stats

def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over entries where `mask` is 1; over everything (a scalar) or along `dim`."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum()
    return (x * mask).sum(dim) / mask.sum(dim)


def masked_share(x: torch.Tensor, mask: torch.Tensor, denominator: torch.Tensor | None = None) -> torch.Tensor:
    """masked_mean, or, given `denominator` (the masked entries of every shard), this shard's share of
    the mean over all shards: summed over shards (or their gradients averaged by DDP, times the
    shard count) it is the mean one process would compute over the whole batch."""
    if denominator is None:
        return masked_mean(x, mask)
    return (x * mask.to(x.dtype)).sum() / denominator


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` over the masked entries (a scalar), with Bessel's correction when `unbiased`."""
    mask = mask.to(x.dtype)
    variance = masked_mean((x - masked_mean(x, mask)) ** 2, mask)
    if unbiased:
        count = mask.sum()
        if count < 2:
            raise ValueError(f"unbiased variance needs at least 2 masked entries, got {int(count)}")
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std with mean and std from the masked entries only, so padding cannot skew them.

    With `shift_mean=False` the mean is added back (only the scale changes), as TRL does for rewards.
    Entries outside the mask are transformed too but carry no meaning; losses mask them out.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        whitened = whitened + mean
    return whitened


# ---------------------------------------------------------------------------------------- KL estimators
# Schulman, "Approximating KL Divergence" (2020). The tokens are sampled from the policy, so each is
# a single-sample estimate of KL(policy || reference) at that position.

def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """log(p/q): unbiased, high variance, negative for some tokens."""
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """0.5 * log(p/q)^2: biased, low variance, never negative."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """(q/p - 1) - log(q/p): unbiased and never negative (log r <= r - 1)."""
    log_ratio = ref_logp - logp
    return torch.expm1(log_ratio) - log_ratio


KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def per_token_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    kl_estimator: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards, kl), both (B, R): a KL penalty on every real token, the score on the last one.

    rewards[b, t] = -kl_coef * kl[b, t], plus scores[b] at t = mask[b].sum() - 1. Zero outside
    the mask. The penalty keeps the policy near the reference (Ziegler et al. 2019).
    """
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator must be one of {sorted(KL_ESTIMATORS)}, got {kl_estimator!r}")
    mask = mask.to(logprobs.dtype)
    kl = KL_ESTIMATORS[kl_estimator](logprobs, ref_logprobs) * mask
    rewards = -kl_coef * kl
    lengths = mask.sum(1).long()
    last = (lengths - 1).clamp(min=0).unsqueeze(1)
    score = (scores.to(rewards.dtype) * (lengths > 0)).unsqueeze(1)  # an empty response gets no score
    rewards = rewards.scatter_add(1, last, score)
    return rewards, kl


# ---------------------------------------------------------------------------------------- advantages

def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), both (B, R): generalised advantage estimation (Schulman et al. 2016).

    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}, computed
    backwards. Past the last real token the episode is over: V_{t+1} and A_{t+1} count as 0.
    returns = advantages + values is the value model's target. Both are zero outside the mask.
    """
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    length = rewards.shape[1]
    advantage_next = torch.zeros_like(values[:, 0])
    advantages = []
    for t in reversed(range(length)):
        if t + 1 < length:
            alive_next = mask[:, t + 1]
            value_next = values[:, t + 1]
        else:
            alive_next = value_next = torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * value_next - values[:, t]
        advantage_next = delta + gamma * lam * alive_next * advantage_next
        advantages.append(advantage_next)
    advantages = torch.stack(advantages[::-1], dim=1) * mask
    return advantages, (advantages + values) * mask


# ---------------------------------------------------------------------------------------- losses

def clipped_policy_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
    denominator: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, clip_fraction, approx_kl), scalars: PPO's clipped surrogate (Schulman et al. 2017).

    ratio = exp(new - old); loss = mean over real tokens of max(-A * ratio, -A * clip(ratio)),
    the pessimistic of the two, so moving the ratio beyond [1 - eps, 1 + eps] in the direction
    the advantage favours earns nothing. clip_fraction is the share of tokens where the clipped
    term is the larger (its gradient is zero there); approx_kl = mean of 0.5 * (new - old)^2.
    With `denominator`, each is this shard's share of the mean over all shards (masked_share).
    """
    log_ratio = new_logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_share(torch.max(unclipped, clipped), mask, denominator)
    clip_fraction = masked_share((clipped > unclipped).to(ratio.dtype), mask, denominator)
    approx_kl = masked_share(0.5 * log_ratio**2, mask, denominator)
    return loss, clip_fraction.detach(), approx_kl.detach()


def clipped_value_loss(
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
    denominator: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, clip_fraction), scalars: squared error to the returns, pessimistic over value clipping.

    v_clipped = old + clamp(new - old, -eps, eps); loss = 0.5 * mean of max((new - R)^2,
    (v_clipped - R)^2), so the value model gains nothing from moving more than eps per update.
    """
    v_clipped = old_values + torch.clamp(new_values - old_values, -clip_range, clip_range)
    unclipped = (new_values - returns) ** 2
    clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_share(torch.max(unclipped, clipped), mask, denominator)
    clip_fraction = masked_share((clipped > unclipped).to(unclipped.dtype), mask, denominator)
    return loss, clip_fraction.detach()


# ---------------------------------------------------------------------------------------- from logits

def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, R, V) logits and (B, R) token ids -> (B, R) log-probs of those tokens."""
    return torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, R, V) -> (B, R): entropy of each next-token distribution, a collapse diagnostic.

    Tokens with zero probability (a -inf logit) add 0, not nan.
    """
    logp = F.log_softmax(logits, dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(returns - values) / Var(returns) over real tokens: 1 is perfect, 0 no better than a constant."""
    return 1 - masked_var(returns - values, mask, unbiased=False) / masked_var(returns, mask, unbiased=False)


# ---------------------------------------------------------------------------------------- KL coefficient

class AdaptiveKLController:
    """Moves the KL coefficient to keep the measured KL near `target` (Ziegler et al. 2019).

    Above target the coefficient grows, below it shrinks; the proportional error is clipped to
    +-0.2 so one odd batch cannot swing it, and `horizon` (in samples) sets how fast it moves.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """`current_kl`: mean KL of the last batch; `n_steps`: samples it held."""
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


class FixedKLController:
    """The same interface with a constant coefficient."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to do: the coefficient stays fixed."""


# ---------------------------------------------------------------------------------------- response shape

def is_stop(response_ids: torch.Tensor, stop_ids: int | Sequence[int]) -> torch.Tensor:
    """(B, R) bool: which tokens end a response (one eos id, or several stop ids)."""
    ids = [stop_ids] if isinstance(stop_ids, int) else list(stop_ids)
    return torch.isin(response_ids, torch.tensor(ids, dtype=response_ids.dtype, device=response_ids.device))


def first_eos_mask(response_ids: torch.Tensor, stop_ids: int | Sequence[int]) -> torch.Tensor:
    """(B, R) long mask: 1 up to and including the first stop token, 0 after; all 1 without one.

    Generation keeps padding (often the eos id itself) after the first stop, which must not count.
    """
    is_eos = is_stop(response_ids, stop_ids).long()
    eos_before = is_eos.cumsum(1) - is_eos  # how many eos tokens strictly before each position
    return (eos_before == 0).long()


def eos_penalty(
    scores: torch.Tensor, response_ids: torch.Tensor, stop_ids: int | Sequence[int], penalty: float
) -> torch.Tensor:
    """(B,) scores with `penalty` added where a response never emitted a stop token (it was cut off at
    max length).

    Huang et al. 2024 (the eos trick): without it the policy learns to ramble up to the length limit.
    Returns a new tensor.
    """
    truncated = ~is_stop(response_ids, stop_ids).any(1)
    return scores + penalty * truncated.to(scores.dtype)
