"""Every way alignflow generates text from a causal LM, in one place, batched with a KV cache.

- `generate_responses`: K sampled responses (or one greedy answer) per prompt from a policy:
  the preference, PPO, GRPO/RLOO and win-rate paths; `sample` is the one `generate` call under
  it and under PPO's rollouts (alignflow.rl.rollout).
- `generate_greedy`: greedy continuations of evaluation contexts, cut at stop strings.
- `LineWriter`: a base model continuing a Self-Instruct prompt to the end of its line.

Prompts are left-padded so one `generate` call serves a batch; a response ends at any of the
tokenizer's stop ids (eos, the generation config's eos ids, the template's end-of-turn token:
alignflow.models.loading.stop_token_ids) or at `max_new_tokens`.

Sampling is seeded per row (`SeededSampling`): a response depends on its prompt, its seed and its
place in the whole list, never on which batch, shard or process generated it, so a stage fanned out
over workers or ranks draws exactly the samples of one process. (`LineWriter` keeps transformers'
batch sampler, one generator per call: its Self-Instruct rounds are not sharded.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from alignflow.models.loading import (
    Placement,
    load_causal_lm,
    load_tokenizer,
    resolve_placement,
    response_stop_ids,
)
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
    """The prompts' tokens (no special tokens added: templates carry their own) left-padded."""
    return pad_left([tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts], pad_id(tokenizer), device)


def pad_left(encoded: Sequence[Sequence[int]], pad: int, device) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, tokens in enumerate(encoded):
        ids[row, width - len(tokens):] = torch.tensor(list(tokens), dtype=torch.long)
        mask[row, width - len(tokens):] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


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
    pad = pad_id(tokenizer)
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


@torch.no_grad()
def generate_greedy(model, tokenizer, contexts: Sequence[Sequence[int]], *, until: Sequence[str], max_new_tokens: int,
                    batch_size: int = 16) -> list[str]:
    """Greedy continuation of each tokenised context, cut at the first stop string."""
    model.eval()
    outputs: list[str] = []
    for start in range(0, len(contexts), batch_size):
        batch = pad_left(contexts[start : start + batch_size], pad_id(tokenizer), model.device)
        generated = sample(model, batch, [], temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens,
                           stop_ids=response_stop_ids(tokenizer), pad_id=pad_id(tokenizer))
        for row in generated[:, batch["input_ids"].shape[1]:]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            cut = min([text.index(s) for s in until if s in text], default=len(text))
            outputs.append(text[:cut])
    return outputs


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float  # 0: greedy
    top_p: float
    max_new_tokens: int


def line_end_token_ids(tokenizer) -> list[int]:
    """Ids of every token whose text holds a newline, plus the special tokens."""
    ids = range(len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False)
    ends = {i for i, text in zip(ids, texts, strict=True) if "\n" in text}
    return sorted(ends | set(tokenizer.all_special_ids))


class LineWriter:
    """A causal LM that continues each prompt to the end of its line."""

    def __init__(self, name_or_path: str, placement: Placement | None = None) -> None:
        self.name = name_or_path
        self.tokenizer = load_tokenizer(name_or_path)
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"  # keep the cue at the end of an over-long prompt
        self.model = load_causal_lm(name_or_path, placement or resolve_placement())
        self.device = self.model.device
        self.end_ids = line_end_token_ids(self.tokenizer)

    def _prompt_limit(self, max_new_tokens: int) -> int | None:
        positions = getattr(self.model.config, "max_position_embeddings", None)
        return positions - max_new_tokens if positions and positions > max_new_tokens else None

    @torch.no_grad()
    def complete(self, prompts: list[str], settings: SamplingSettings, seed: int) -> list[Response]:
        """One line per prompt (`finished`: it ended, rather than ran out of tokens); the same prompts, settings and seed give the same lines."""
        if not prompts:
            return []
        limit = self._prompt_limit(settings.max_new_tokens)
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, truncation=limit is not None,
                               max_length=limit).to(self.device)
        sampling = (dict(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
                    if settings.temperature > 0 else dict(do_sample=False))
        torch.manual_seed(seed)
        generated = self.model.generate(
            **batch, **sampling, max_new_tokens=settings.max_new_tokens, use_cache=True,
            eos_token_id=self.end_ids, pad_token_id=self.tokenizer.pad_token_id,
        )
        new_tokens = generated[:, batch["input_ids"].shape[1]:].tolist()
        return [self._to_line(tokens) for tokens in new_tokens]

    def _to_line(self, tokens: list[int]) -> Response:
        ends = set(self.end_ids)
        stop = next((i for i, token in enumerate(tokens) if token in ends), None)
        kept = tokens if stop is None else tokens[: stop + 1]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Response(text=text.split("\n", 1)[0], finished=stop is not None)
