"""Scoring with a reward model: one scalar per (prompt + response) text, as RewardTrainer trained it.

RewardTrainer appends the eos token to each text and reads the score at the last real token
(right padding); `score_texts` does the same, so held-out accuracy, the margin histogram and PPO's
rewards all see the model exactly as it was trained; `reward_function` gives GRPO and RLOO the
same reading of their token ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alignflow.models.generation import pad_id


def with_eos(text: str, eos: str | None) -> str:
    return text if not eos or text.endswith(eos) else text + eos


def score_texts(model, tokenizer, texts: Sequence[str], *, batch_size: int = 16, max_length: int | None = None) -> list[float]:
    """The reward of each full text (prompt + response), eos appended when missing."""
    encoded = [tokenizer(with_eos(t, tokenizer.eos_token))["input_ids"] for t in texts]
    if max_length:
        encoded = [ids[:max_length] for ids in encoded]
    return score_sequences(model, encoded, pad_id(tokenizer), batch_size=batch_size)


@torch.no_grad()
def score_sequences(model, sequences: Sequence[Sequence[int]], pad: int, *, batch_size: int = 16) -> list[float]:
    """The reward of each token sequence, read at its last token (right-padded batches)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores: list[float] = []
    try:
        for start in range(0, len(sequences), batch_size):
            batch = sequences[start:start + batch_size]
            width = max(len(ids) for ids in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, tokens in enumerate(batch):
                ids[row, :len(tokens)] = torch.tensor(list(tokens), dtype=torch.long)
                mask[row, :len(tokens)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            last = mask.sum(dim=1).to(device) - 1
            scores += logits[torch.arange(len(batch), device=device), last, 0].float().tolist() \
                if logits.dim() == 3 else logits[:, 0].float().tolist()
    finally:
        model.train(was_training)
    return scores


def reward_function(model, tokenizer, *, batch_size: int = 32):
    """The reward model as a TRL reward function that scores the [prompt; completion] token ids, the
    completion's eos included when it ended with one: how the reward stage trained it and how PPO
    and the held-out comparison read it. (TRL's own path for a reward model scores prompt +
    completion *text*, decoded without special tokens: the eos the score is trained to be read at
    is missing, and every response is scored as if cut off.)"""

    def reward_model(prompts, completions, completion_ids, **_) -> list[float]:
        sequences = [tokenizer(prompt, add_special_tokens=False)["input_ids"] + list(ids)
                     for prompt, ids in zip(prompts, completion_ids, strict=True)]
        return score_sequences(model, sequences, pad_id(tokenizer), batch_size=batch_size)

    return reward_model


def finite_margins(chosen: Sequence[float], rejected: Sequence[float], split: str) -> list[float]:
    """chosen - rejected per pair; a reward model that scores any pair NaN or infinite (a diverged
    run, a backbone that gives NaN on padding) is stopped here, before its metrics and plots."""
    import math

    from alignflow.errors import NonFiniteLoss

    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    bad = sum(not math.isfinite(m) for m in margins)
    if bad:
        raise NonFiniteLoss(f"reward_model: the trained model scores {bad} of {len(margins)} {split} pairs NaN or "
                            "infinite: training diverged or the backbone gives non-finite states. Lower the "
                            "learning rate, enable clipping (max_grad_norm) or try execution.dtype float32, then rerun.")
    return margins


def pair_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float:
    """Share of pairs whose chosen response scores strictly higher."""
    pairs = list(zip(chosen, rejected, strict=True))
    return sum(c > r for c, r in pairs) / max(len(pairs), 1)
