"""A post-trained policy against the SFT policy on held-out prompts: the comparisons every
preference stage (PPO, DPO, GRPO, RLOO) logs, in one place.

- `held_out_comparison`: both sample one response per prompt (same settings, the same per-row
  seeds); the reward model scores them; the trained policy's KL to the SFT policy is measured on
  its own samples (nats per response). Keys are `heldout_reward_<policy_name>`,
  `heldout_reward_sft` and `heldout_kl_to_sft`, and `heldout_reward_gain` (the first minus the
  second) with its 95% interval over prompts (`_ci_low`, `_ci_high`: per-prompt differences).
- `compare_policies`: each policy answers greedily; the oracle scores both answers against the
  reference (`head_to_head`). The win rate counts a tie as half a win, so 0.5 means no difference;
  `win_rate_metrics` gives it with its 95% interval over prompts.

The intervals are over the held-out prompts of one training run (one seed): they say how sure the
measurement is, not how much another training seed would move it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from alignflow.data.preferences import oracle_score
from alignflow.evaluation.metrics import mean_interval
from alignflow.schemas.config import PREFERENCE_METHODS  # each its own policy_name


def held_out_comparison(policy, reference, reward_model, tokenizer, prompts: pd.DataFrame, *, max_new_tokens: int,
                        temperature: float = 1.0, top_p: float = 1.0, policy_name: str = "ppo") -> dict[str, float]:
    """Mean reward-model score of sampled responses from the trained and the SFT policy on held-out
    prompts, and the trained policy's KL to the SFT policy on its own samples."""
    import torch

    from alignflow.models.generation import row_seeds
    from alignflow.rl.rollout import generate, response_logprobs, sequence_scores

    texts = list(prompts["prompt"])
    results, per_prompt = {}, {}
    seeds = row_seeds(0, 0, len(texts))
    for name, model in ((policy_name, policy), ("sft", reference)):
        query, query_mask, response, mask = generate(model, tokenizer, texts, seeds, max_new_tokens=max_new_tokens,
                                                     temperature=temperature, top_p=top_p)
        with torch.no_grad():
            per_prompt[name] = sequence_scores(reward_model, query, query_mask, response, mask).float()
            results[f"heldout_reward_{name}"] = float(per_prompt[name].mean())
            if model is policy:
                logp = response_logprobs(policy, query, query_mask, response, mask, temperature)
                ref = response_logprobs(reference, query, query_mask, response, mask, temperature)
                results["heldout_kl_to_sft"] = float(((logp - ref) * mask).sum(1).mean())
    gains = (per_prompt[policy_name] - per_prompt["sft"]).tolist()
    low, high = mean_interval(gains)
    return results | {"heldout_reward_gain": sum(gains) / len(gains), "heldout_reward_gain_ci_low": low,
                      "heldout_reward_gain_ci_high": high}


@dataclass(frozen=True)
class HeadToHead:
    wins: int
    losses: int
    ties: int
    score_a: float  # mean oracle score of policy A
    score_b: float
    exact_a: float  # share of exact answers of policy A
    exact_b: float

    @property
    def win_rate(self) -> float:
        n = self.wins + self.losses + self.ties
        return (self.wins + 0.5 * self.ties) / n if n else 0.5

    def win_rate_interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Interval of the mean per-prompt outcome (win 1, tie 0.5, loss 0), clipped to [0, 1]."""
        outcomes = [1.0] * self.wins + [0.5] * self.ties + [0.0] * self.losses
        if not outcomes:
            return 0.0, 1.0
        low, high = mean_interval(outcomes, confidence)
        return max(0.0, low), min(1.0, high)


def win_rate_metrics(duel: HeadToHead) -> dict[str, float]:
    """The oracle win rate against SFT and its 95% interval, as every preference stage logs them."""
    low, high = duel.win_rate_interval()
    return {"oracle_win_rate_vs_sft": duel.win_rate, "oracle_win_rate_ci_low": low, "oracle_win_rate_ci_high": high}


def head_to_head(answers_a: list[str], answers_b: list[str], references: list[str]) -> HeadToHead:
    a = [oracle_score(x, ref) for x, ref in zip(answers_a, references, strict=True)]
    b = [oracle_score(x, ref) for x, ref in zip(answers_b, references, strict=True)]
    n = max(len(references), 1)
    return HeadToHead(wins=sum(x > y for x, y in zip(a, b, strict=True)),
                      losses=sum(x < y for x, y in zip(a, b, strict=True)),
                      ties=sum(x == y for x, y in zip(a, b, strict=True)),
                      score_a=sum(a) / n, score_b=sum(b) / n,
                      exact_a=sum(x == 1.0 for x in a) / n, exact_b=sum(y == 1.0 for y in b) / n)


def compare_policies(policy, reference_policy, tokenizer, prompts: pd.DataFrame, *, max_new_tokens: int,
                     batch_size: int = 32) -> tuple[HeadToHead, pd.DataFrame]:
    """Greedy answers of both policies to `prompts` (columns prompt, reference), scored by the oracle."""
    from alignflow.models.generation import generate_responses

    texts = list(prompts["prompt"])
    answers = [r[0].text for r in generate_responses(policy, tokenizer, texts, max_new_tokens=max_new_tokens,
                                                     batch_size=batch_size, progress="win rate: policy")]
    baseline = [r[0].text for r in generate_responses(reference_policy, tokenizer, texts,
                                                      max_new_tokens=max_new_tokens, batch_size=batch_size,
                                                      progress="win rate: baseline")]
    result = head_to_head(answers, baseline, list(prompts["reference"]))
    table = prompts.assign(answer=answers, baseline_answer=baseline)
    return result, table




@dataclass(frozen=True)
class FrontierPoint:
    """One post-trained policy on the reward-KL plane (the DPO paper's Figure 2 for this pipeline)."""

    method: str  # dpo, ppo, grpo, rloo
    stage: str  # the stage run: the method's own, or a sweep point (dpo-beta-0.3)
    kl_to_sft: float  # nats per response, on the policy's own held-out samples
    reward_gain: float  # held-out reward-model score minus the SFT policy's, same prompts and seeds
    win_rate: float | None  # oracle win rate against SFT, when measured
    reward_gain_ci: tuple[float, float] | None = None  # 95% intervals over the held-out prompts
    win_rate_ci: tuple[float, float] | None = None


def frontier_points(runs: list[tuple[str, dict[str, float]]]) -> list[FrontierPoint]:
    """The points of every (stage, metrics) that holds a held-out comparison (`held_out_comparison`'s
    keys), by method and KL."""
    points = []
    for stage, metrics in runs:
        methods = [m for m in PREFERENCE_METHODS if f"heldout_reward_{m}" in metrics]
        if "heldout_kl_to_sft" not in metrics or "heldout_reward_sft" not in metrics or len(methods) != 1:
            continue
        method = methods[0]
        points.append(FrontierPoint(method, stage, metrics["heldout_kl_to_sft"],
                                    metrics[f"heldout_reward_{method}"] - metrics["heldout_reward_sft"],
                                    metrics.get("oracle_win_rate_vs_sft"),
                                    _interval(metrics, "heldout_reward_gain"), _interval(metrics, "oracle_win_rate")))
    return sorted(points, key=lambda p: (p.method, p.kl_to_sft))


def _interval(metrics: dict[str, float], name: str) -> tuple[float, float] | None:
    low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    return None if low is None or high is None else (low, high)
