"""Rollouts for PPO: sample responses with a KV cache, then score every response token.

Prompts are left-padded so one `generate` call serves the batch; responses come back right-padded
(everything after the first eos is padding). Log-probabilities, values and rewards are computed
by one forward pass over [prompt; response] with position ids counted over real tokens only, so
a left-padded row sees exactly what it would see alone (tests check this against an unpadded
forward pass).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from alignflow.models.generation import left_padded, sample
from alignflow.models.loading import response_stop_ids
from alignflow.rl.ppo_math import RolloutBatch, entropy_from_logits, first_eos_mask, logprobs_from_logits


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding: 0 at each row's first real token."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def sequence(query_ids: torch.Tensor, query_mask: torch.Tensor, response_ids: torch.Tensor,
             response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[prompt; response] ids and attention mask, (B, Q + R)."""
    return torch.cat([query_ids, response_ids], 1), torch.cat([query_mask.long(), response_mask.long()], 1)


def response_logprobs(model, query_ids, query_mask, response_ids, response_mask, temperature: float = 1.0,
                      with_entropy: bool = False):
    """Log-probs (B, R) of the response tokens under `model` (logits / temperature), and entropy."""
    ids, mask = sequence(query_ids, query_mask, response_ids, response_mask)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
    q = query_ids.shape[1]
    logits = logits[:, q - 1:-1].float() / temperature  # position t predicts token t + 1
    logprobs = logprobs_from_logits(logits, response_ids)
    return (logprobs, entropy_from_logits(logits)) if with_entropy else logprobs


def head_outputs(model, query_ids, query_mask, response_ids, response_mask) -> torch.Tensor:
    """The scalar head of a sequence-classification model on every position, (B, Q + R).

    AutoModelForSequenceClassification reads its head at one token; PPO's value model needs it
    at every response position, and the reward at each row's last real token.
    """
    ids, mask = sequence(query_ids, query_mask, response_ids, response_mask)
    hidden = model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).last_hidden_state
    return model.score(hidden).squeeze(-1).float()


def response_values(value_model, query_ids, query_mask, response_ids, response_mask) -> torch.Tensor:
    """V(state before response token t), (B, R): the head at the position that predicts token t."""
    q = query_ids.shape[1]
    return head_outputs(value_model, query_ids, query_mask, response_ids, response_mask)[:, q - 1:-1]


def sequence_scores(reward_model, query_ids, query_mask, response_ids, response_mask) -> torch.Tensor:
    """The reward model's score of each whole response, read at its last real token, (B,)."""
    outputs = head_outputs(reward_model, query_ids, query_mask, response_ids, response_mask)
    last = query_ids.shape[1] + response_mask.long().sum(1) - 1
    return outputs[torch.arange(outputs.shape[0]), last]


@torch.no_grad()
def generate(policy, tokenizer, prompts: Sequence[str], seeds: Sequence[int], *, max_new_tokens: int,
             temperature: float, top_p: float,
             use_cache: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(query_ids, query_mask, response_ids, response_mask) for one sampled response per prompt,
    row i drawn with `seeds[i]` (alignflow.models.generation.SeededSampling)."""
    device = next(policy.parameters()).device
    batch = left_padded(tokenizer, prompts, device)
    stops = response_stop_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    output = sample(policy, batch, seeds, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                    stop_ids=stops, pad_id=pad, use_cache=use_cache)
    response_ids = output[:, batch["input_ids"].shape[1]:]
    response_mask = first_eos_mask(response_ids, stops)
    response_ids = response_ids.masked_fill(response_mask == 0, pad)
    return batch["input_ids"], batch["attention_mask"], response_ids, response_mask


RewardFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]], torch.Tensor]


@torch.no_grad()
def rollout(policy, reference, value_model, reward: RewardFunction, tokenizer, prompts: Sequence[str],
            seeds: Sequence[int], *, max_new_tokens: int, temperature: float, top_p: float,
            use_cache: bool = True) -> tuple[RolloutBatch, list[str]]:
    """Sample (row i with `seeds[i]`), then score: policy and reference log-probs, values, the
    sequence reward; and the texts."""
    was_training = policy.training, value_model.training
    policy.eval()
    value_model.eval()
    query_ids, query_mask, response_ids, response_mask = generate(
        policy, tokenizer, prompts, seeds, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
        use_cache=use_cache)
    logprobs = response_logprobs(policy, query_ids, query_mask, response_ids, response_mask, temperature)
    ref_logprobs = response_logprobs(reference, query_ids, query_mask, response_ids, response_mask, temperature)
    values = response_values(value_model, query_ids, query_mask, response_ids, response_mask)
    texts = [tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
             for ids, mask in zip(response_ids, response_mask, strict=True)]
    scores = reward(query_ids, query_mask, response_ids, response_mask, texts)
    policy.train(was_training[0])
    value_model.train(was_training[1])
    batch = RolloutBatch(query_ids=query_ids, query_mask=query_mask, response_ids=response_ids, response_mask=response_mask,
                         logprobs=logprobs, ref_logprobs=ref_logprobs, values=values, scores=scores.float())
    return batch, texts
