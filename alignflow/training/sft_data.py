"""Tokenise instruction rows for SFT with loss on response tokens only.

Basic rows go through a prompt template (the notes' 指令/输入/输出 format); dialogue and
multi-turn rows go through the tokenizer's chat template. Labels are -100 everywhere except the
assistant's tokens, end-of-turn token included, so the model learns to answer and to stop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from transformers import PreTrainedTokenizerBase

    from alignflow.schemas.stages.sft import SFTStageConfig

IGNORE = -100


@dataclass(frozen=True)
class PromptTemplate:
    """How a basic row becomes a prompt; the response follows it, then the eos token."""

    with_input: str = "指令：{instruction}\n输入：{input}\n输出："
    without_input: str = "指令：{instruction}\n输出："
    prefix: str = ""  # e.g. the BOS token's text, for models pretrained with BOS before every document

    def render(self, instruction: str, input_text: str) -> str:
        template = self.with_input if input_text else self.without_input
        return self.prefix + template.format(instruction=instruction, input=input_text)


def prompt_template(settings: SFTStageConfig, tokenizer) -> PromptTemplate:
    """The basic-format template SFT trains with; later stages prompt the policy the same way."""
    prefix = tokenizer.bos_token if settings.add_bos and tokenizer.bos_token else ""
    return PromptTemplate(settings.prompt_with_input, settings.prompt_without_input, prefix)


def prompt_text(row: dict, tokenizer: PreTrainedTokenizerBase, template: PromptTemplate) -> str:
    """The prompt of an instruction row exactly as SFT showed it to the model, without the response:
    what the preference and RL stages give the policy."""
    if row["format"] == "basic":
        return template.render(row["instruction"], row["input"])
    messages = json.loads(row["messages"])[:-1]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def tokenize_basic(instruction: str, input_text: str, output: str, tokenizer: PreTrainedTokenizerBase,
                   template: PromptTemplate) -> dict[str, list[int]]:
    """Prompt tokens (masked) + response tokens + eos (trained)."""
    prompt_ids = tokenizer(template.render(instruction, input_text), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": prompt_ids + response_ids, "labels": [IGNORE] * len(prompt_ids) + response_ids}


def assistant_spans(messages: list[dict], tokenizer: PreTrainedTokenizerBase) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant reply (end-of-turn included).

    Works with any chat template: the span of turn i is what rendering messages[:i+1] adds to
    rendering messages[:i] with the generation prompt, minus trailing whitespace.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not text.startswith(through) or not through.startswith(before):
            raise ValueError("the chat template does not render conversations incrementally; "
                             "cannot tell which tokens are the assistant's")
        spans.append((len(before), len(through.rstrip())))
    return text, spans


def tokenize_chat(messages: list[dict], tokenizer: PreTrainedTokenizerBase) -> dict[str, list[int]]:
    """Chat-template tokens; labels only on tokens inside assistant replies."""
    text, spans = assistant_spans(messages, tokenizer)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    for token_id, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        inside = any(start >= lo and end <= hi for lo, hi in spans) and end > start
        labels.append(token_id if inside else IGNORE)
    return {"input_ids": list(encoded["input_ids"]), "labels": labels}


def tokenize_row(row: dict, tokenizer: PreTrainedTokenizerBase, template: PromptTemplate) -> dict[str, list[int]]:
    if row["format"] == "basic":
        return tokenize_basic(row["instruction"], row["input"], row["output"], tokenizer, template)
    return tokenize_chat(json.loads(row["messages"]), tokenizer)


def tokenize_table(frame: pd.DataFrame, tokenizer, template: PromptTemplate,
                   max_length: int) -> tuple[list[dict], list[dict], int]:
    """(examples with input_ids/labels, their rows' task/source, rows dropped because truncation left
    no response token)."""
    examples, origins, dropped = [], [], 0
    for row in frame.to_dict(orient="records"):
        encoded = tokenize_row(row, tokenizer, template)
        encoded = {key: values[:max_length] for key, values in encoded.items()}
        if all(label == IGNORE for label in encoded["labels"]):
            dropped += 1
            continue
        examples.append(encoded)
        origins.append({"task": row["task"], "source": row["source"]})
    return examples, origins, dropped
