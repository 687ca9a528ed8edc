"""The SFT loss mask: responses (end-of-turn included) are trained, prompts and user turns are not."""

from __future__ import annotations

import json

import pytest

from alignflow.demo.tokenizer import IM_END
from alignflow.training.sft_data import (
    IGNORE,
    PromptTemplate,
    prompt_text,
    tokenize_basic,
    tokenize_chat,
    tokenize_row,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    return tiny_tokenizer  # the session's (conftest.py)


def trained_text(encoded, tokenizer) -> str:
    return tokenizer.decode([t for t, label in zip(encoded["input_ids"], encoded["labels"], strict=True)
                             if label != IGNORE])


def test_basic_rows_train_on_the_response_and_eos_only(tokenizer):
    encoded = tokenize_basic("翻译", "apple", "苹果", tokenizer, PromptTemplate())
    assert tokenizer.decode(encoded["input_ids"]) == f"指令：翻译\n输入：apple\n输出：苹果{IM_END}"
    assert trained_text(encoded, tokenizer) == f"苹果{IM_END}"
    assert encoded["labels"][-1] == tokenizer.eos_token_id
    without_input = tokenize_basic("写诗", "", "春", tokenizer, PromptTemplate())
    assert tokenizer.decode(without_input["input_ids"]).startswith("指令：写诗\n输出：")


def test_single_turn_dialogue_masks_the_user_turn(tokenizer):
    messages = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "好的"}]
    encoded = tokenize_chat(messages, tokenizer)
    assert trained_text(encoded, tokenizer) == f"好的{IM_END}"


def test_multi_turn_trains_every_assistant_turn_and_no_user_turn(tokenizer):
    messages = [{"role": "system", "content": "hello"}, {"role": "user", "content": "你好"},
                {"role": "assistant", "content": "好的"}, {"role": "user", "content": "再见"},
                {"role": "assistant", "content": "拜拜"}]
    encoded = tokenize_chat(messages, tokenizer)
    assert trained_text(encoded, tokenizer) == f"好的{IM_END}拜拜{IM_END}"
    assert sum(1 for t, label in zip(encoded["input_ids"], encoded["labels"], strict=True)
               if label != IGNORE and t == tokenizer.eos_token_id) == 2


def test_rows_dispatch_on_format(tokenizer):
    basic = {"format": "basic", "instruction": "翻译", "input": "apple", "output": "苹果", "messages": "[]"}
    assert trained_text(tokenize_row(basic, tokenizer, PromptTemplate()), tokenizer) == f"苹果{IM_END}"
    dialogue = {"format": "dialogue", "instruction": "", "input": "", "output": "",
                "messages": json.dumps([{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}])}
    assert trained_text(tokenize_row(dialogue, tokenizer, PromptTemplate()), tokenizer) == f"world{IM_END}"


def test_bos_prefix_is_one_masked_special_token(tokenizer):
    encoded = tokenize_basic("翻译", "apple", "苹果", tokenizer, PromptTemplate(prefix=tokenizer.bos_token))
    assert encoded["input_ids"][0] == tokenizer.bos_token_id
    assert encoded["labels"][0] == IGNORE
    plain = tokenize_basic("翻译", "apple", "苹果", tokenizer, PromptTemplate())
    assert encoded["input_ids"][1:] == plain["input_ids"]


def test_prompt_text_is_what_sft_shows_before_the_response(tokenizer):
    basic = {"format": "basic", "instruction": "翻译", "input": "apple", "output": "苹果", "messages": "[]"}
    assert prompt_text(basic, tokenizer, PromptTemplate()) == "指令：翻译\n输入：apple\n输出："
    chat = {"format": "dialogue", "messages": json.dumps([{"role": "user", "content": "你好"},
                                                          {"role": "assistant", "content": "好的"}])}
    text = prompt_text(chat, tokenizer, PromptTemplate())
    full = tokenizer.apply_chat_template(json.loads(chat["messages"]), tokenize=False)
    assert full.startswith(text) and "好的" not in text
