"""Batched sampling of one line per prompt from a causal LM (hub id or local folder).

Base models continue text; the data stages ask them for one field at a time (`任务：` → an
instruction, `输入：` → an input), so generation stops at the end of the line: any token whose
text contains a newline, or a special token, ends a row. Prompts are left-padded so that one
`generate` call with the KV cache serves the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignflow.data.self_instruct import Line
from alignflow.models import Placement, load_causal_lm, load_tokenizer, resolve_placement


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
    def complete(self, prompts: list[str], settings: SamplingSettings, seed: int) -> list[Line]:
        """One `Line` per prompt; the same prompts, settings and seed give the same lines."""
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

    def _to_line(self, tokens: list[int]) -> Line:
        ends = set(self.end_ids)
        stop = next((i for i, token in enumerate(tokens) if token in ends), None)
        kept = tokens if stop is None else tokens[: stop + 1]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Line(text=text.split("\n", 1)[0], finished=stop is not None)
