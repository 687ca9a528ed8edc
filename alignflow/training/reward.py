"""Scoring with a reward model: one scalar per (prompt + response) text, as RewardTrainer trained it.

RewardTrainer appends the eos token to each text and reads the score at the last real token
(right padding); `score_texts` does the same, so held-out accuracy, the margin histogram and PPO's
rewards all see the model exactly as it was trained.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def with_eos(text: str, eos: str | None) -> str:
    return text if not eos or text.endswith(eos) else text + eos


@torch.no_grad()
def score_texts(model, tokenizer, texts: Sequence[str], *, batch_size: int = 16, max_length: int | None = None) -> list[float]:
    """The reward of each full text (prompt + response), eos appended when missing."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    scores: list[float] = []
    try:
        for start in range(0, len(texts), batch_size):
            encoded = [tokenizer(with_eos(t, tokenizer.eos_token))["input_ids"]
                       for t in texts[start:start + batch_size]]
            if max_length:
                encoded = [ids[:max_length] for ids in encoded]
            width = max(len(ids) for ids in encoded)
            ids = torch.full((len(encoded), width), pad, dtype=torch.long)
            mask = torch.zeros((len(encoded), width), dtype=torch.long)
            for row, tokens in enumerate(encoded):
                ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
                mask[row, :len(tokens)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            last = mask.sum(dim=1).to(device) - 1
            scores += logits[torch.arange(len(encoded), device=device), last, 0].float().tolist() \
                if logits.dim() == 3 else logits[:, 0].float().tolist()
    finally:
        model.train(was_training)
    return scores


def pair_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float:
    """Share of pairs whose chosen response scores strictly higher."""
    pairs = list(zip(chosen, rejected, strict=True))
    return sum(c > r for c, r in pairs) / max(len(pairs), 1)
