"""Responses from a policy: K samples per prompt, or one greedy answer, batched with a KV cache.

Prompts are left-padded so one `generate` call serves a batch; a response ends at any of the
tokenizer's stop ids (eos, the generation config's eos ids, the template's end-of-turn token:
alignflow.models.stop_token_ids) or at `max_new_tokens`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from alignflow.models import response_stop_ids
from alignflow.progress import StepProgress


@dataclass(frozen=True)
class Response:
    text: str
    finished: bool  # ended with eos rather than at the length limit


def left_padded(tokenizer, prompts: Sequence[str], device) -> dict[str, torch.Tensor]:
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(len(ids) for ids in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, tokens in enumerate(encoded):
        ids[row, width - len(tokens):] = torch.tensor(tokens, dtype=torch.long)
        mask[row, width - len(tokens):] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


@torch.no_grad()
def generate_responses(model, tokenizer, prompts: Sequence[str], *, num_samples: int = 1, temperature: float = 0.0,
                       top_p: float = 1.0, max_new_tokens: int = 32, batch_size: int = 16,
                       seed: int = 0, progress: str = "generate") -> list[list[Response]]:
    """`num_samples` responses per prompt (temperature 0: greedy, then num_samples must be 1);
    `progress` names the bar that counts prompts."""
    if temperature == 0 and num_samples != 1:
        raise ValueError("greedy decoding gives one response per prompt; use temperature > 0 for several")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sampling = (dict(do_sample=True, temperature=temperature, top_p=top_p, num_return_sequences=num_samples)
                if temperature > 0 else dict(do_sample=False))
    torch.manual_seed(seed)
    results: list[list[Response]] = []
    try:
        with StepProgress(progress, total=len(prompts), unit="prompt") as bar:
            for start in range(0, len(prompts), batch_size):
                batch = left_padded(tokenizer, prompts[start:start + batch_size], device)
                generated = model.generate(**batch, **sampling, max_new_tokens=max_new_tokens, use_cache=True,
                                           eos_token_id=response_stop_ids(tokenizer), pad_token_id=pad)
                new = generated[:, batch["input_ids"].shape[1]:].tolist()
                for index in range(0, len(new), num_samples):
                    results.append([_response(tokens, tokenizer) for tokens in new[index:index + num_samples]])
                bar.advance(len(new) // num_samples)
    finally:
        model.train(was_training)
    return results


def _response(tokens: list[int], tokenizer) -> Response:
    stops = set(response_stop_ids(tokenizer))
    end = next((i for i, token in enumerate(tokens) if token in stops), None)
    kept = tokens if end is None else tokens[:end]
    return Response(tokenizer.decode(kept, skip_special_tokens=True).strip(), end is not None)
