"""A trained policy against the SFT policy on held-out prompts, as the reward model sees them.

Both sample one response per prompt (same settings, the same per-row seeds); the reward model scores them;
the trained policy's KL to the SFT policy is measured on its own samples (nats per response).
Keys are `heldout_reward_<policy_name>`, `heldout_reward_sft` and `heldout_kl_to_sft`.
"""

from __future__ import annotations

import pandas as pd


def held_out_comparison(policy, reference, reward_model, tokenizer, prompts: pd.DataFrame, *, max_new_tokens: int,
                        temperature: float = 1.0, top_p: float = 1.0, policy_name: str = "ppo") -> dict[str, float]:
    """Mean reward-model score of sampled responses from the PPO and the SFT policy on held-out
    prompts, and the PPO policy's KL to the SFT policy on its own samples."""
    import torch

    from alignflow.rl.rollout import generate, response_logprobs, sequence_scores
    from alignflow.sampling import row_seeds

    texts = list(prompts["prompt"])
    results = {}
    seeds = row_seeds(0, 0, len(texts))
    for name, model in ((policy_name, policy), ("sft", reference)):
        query, query_mask, response, mask = generate(model, tokenizer, texts, seeds, max_new_tokens=max_new_tokens,
                                                     temperature=temperature, top_p=top_p)
        with torch.no_grad():
            results[f"heldout_reward_{name}"] = float(sequence_scores(reward_model, query, query_mask, response,
                                                                      mask).mean())
            if model is policy:
                logp = response_logprobs(policy, query, query_mask, response, mask, temperature)
                ref = response_logprobs(reference, query, query_mask, response, mask, temperature)
                results["heldout_kl_to_sft"] = float(((logp - ref) * mask).sum(1).mean())
    return results
