"""Annotators that score sampled responses: the reference-based oracle and a model as judge.

The oracle (alignflow.data.preferences.oracle_score) needs a reference answer; the judge needs
only a rubric. Both return one score per response, higher = better; rankings files are read in
alignflow.data.preferences.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alignflow.models.generation import left_padded


def first_token(tokenizer, word: str) -> int:
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"judge: the word {word!r} encodes to no token")
    return ids[0]


@torch.no_grad()
def judge_scores(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], *, rubric: str, yes: str,
                 no: str, batch_size: int = 16) -> list[float]:
    """log P(yes) - log P(no) for the first token after the rubric, per (prompt, response)."""
    yes_id, no_id = first_token(tokenizer, yes), first_token(tokenizer, no)
    if yes_id == no_id:
        raise ValueError(f"judge: {yes!r} and {no!r} start with the same token; choose other words")
    texts = [rubric.format(prompt=p, response=r) for p, r in zip(prompts, responses, strict=True)]
    model.eval()
    device = next(model.parameters()).device
    scores: list[float] = []
    for start in range(0, len(texts), batch_size):
        batch = left_padded(tokenizer, texts[start:start + batch_size], device)
        positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # left padding: count real tokens only
        logits = model(**batch, position_ids=positions).logits[:, -1].float().log_softmax(-1)
        scores += (logits[:, yes_id] - logits[:, no_id]).tolist()
    return scores
