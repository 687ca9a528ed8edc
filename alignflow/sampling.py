"""Responses from a policy: K samples per prompt, or one greedy answer, batched with a KV cache.

Prompts are left-padded so one `generate` call serves a batch; a response ends at any of the
tokenizer's stop ids (eos, the generation config's eos ids, the template's end-of-turn token:
alignflow.models.stop_token_ids) or at `max_new_tokens`.

Sampling is seeded per row (`SeededSampling`): a response depends on its prompt, its seed and its
place in the whole list, never on which batch, shard or process generated it, so a stage fanned out
over workers or ranks draws exactly the samples of one process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from alignflow.models import response_stop_ids
from alignflow.progress import StepProgress


def row_seeds(seed: int, first: int, count: int) -> list[int]:
    """One seed per row, from the run's seed and the row's global index."""
    return [(seed * 1_000_003 + first + row) % 2**62 for row in range(count)]


class SeededSampling:
    """A logits processor that turns greedy decoding into sampling at `temperature` (and nucleus
    `top_p`) with one random generator per row: the Gumbel-max trick, argmax(logits / T + G) with
    G ~ Gumbel(0, 1), draws from softmax(logits / T). A row's draws depend only on its seed, not on
    the other rows of its batch (which `do_sample=True` would share one generator with)."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device) -> None:
        self.temperature, self.top_p = temperature, top_p
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            scores = nucleus(scores, self.top_p)
        uniform = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device)
                               for g in self.generators])
        tiny = torch.finfo(uniform.dtype).tiny
        return scores - torch.log(-torch.log(uniform.clamp(tiny, 1 - 1e-7)))


def nucleus(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Scores outside the smallest set of tokens whose probability reaches `top_p` set to -inf
    (at least one token kept), as transformers' TopPLogitsWarper does."""
    sorted_scores, order = torch.sort(scores, descending=False)
    cumulative = sorted_scores.softmax(-1).cumsum(-1)
    remove = cumulative <= 1 - top_p
    remove[..., -1] = False
    return scores.masked_fill(remove.scatter(-1, order, remove), float("-inf"))


def sample(model, batch: dict[str, torch.Tensor], seeds: Sequence[int], *, temperature: float, top_p: float,
           max_new_tokens: int, stop_ids: list[int], pad_id: int, use_cache: bool = True) -> torch.Tensor:
    """generate() with per-row seeded sampling (temperature > 0) or greedy decoding (temperature 0)."""
    from transformers import GenerationConfig, LogitsProcessorList

    processors = (LogitsProcessorList([SeededSampling(seeds, temperature, top_p, batch["input_ids"].device)])
                  if temperature > 0 else None)
    settings = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, use_cache=use_cache,
                                eos_token_id=stop_ids, pad_token_id=pad_id)
    return model.generate(**batch, generation_config=settings, logits_processor=processors)


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
                       seed: int = 0, first_index: int = 0, progress: str = "generate") -> list[list[Response]]:
    """`num_samples` responses per prompt (temperature 0: greedy, then num_samples must be 1);
    `first_index` is the first prompt's place in the whole list when `prompts` is one shard of it;
    `progress` names the bar that counts prompts."""
    if temperature == 0 and num_samples != 1:
        raise ValueError("greedy decoding gives one response per prompt; use temperature > 0 for several")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    results: list[list[Response]] = []
    try:
        with StepProgress(progress, total=len(prompts), unit="prompt") as bar:
            for start in range(0, len(prompts), batch_size):
                chunk = [p for p in prompts[start:start + batch_size] for _ in range(num_samples)]
                batch = left_padded(tokenizer, chunk, device)
                seeds = row_seeds(seed, (first_index + start) * num_samples, len(chunk))
                generated = sample(model, batch, seeds, temperature=temperature, top_p=top_p,
                                   max_new_tokens=max_new_tokens, stop_ids=response_stop_ids(tokenizer), pad_id=pad)
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
