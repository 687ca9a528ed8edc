"""Self-Instruct: the filters, the pool, prompts and the config section."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
from pydantic import ValidationError

from alignflow.data.self_instruct import (
    InstructionPool,
    Line,
    check_blocklist,
    check_duplicate,
    check_length,
    check_parseable,
    check_similarity,
    instruction_prompt,
    normalize_instruction,
    pool_from_table,
    sample_in_context,
    screen_instruction,
)
from alignflow.schemas.config import SelfInstructConfig

HUMAN = ["写一首关于秋天的诗", "把句子翻译成英文", "总结这段文字的要点", "判断数字是不是质数", "给文章起一个标题",
         "列出三个同义词", "纠正句子里的错别字", "把句子改写成问句", "把单词的字母倒过来写"]


def build_table(instructions: list[str], source: str = "seed:human") -> pd.DataFrame:
    rows = [{"id": f"{source}-{i}", "task": "seed", "format": "basic", "instruction": text, "input": "",
             "output": "好的", "messages": json.dumps([{"role": "user", "content": text},
                                                       {"role": "assistant", "content": "好的"}], ensure_ascii=False),
             "source": source} for i, text in enumerate(instructions)]
    return pd.DataFrame(rows).astype("str")


# filters

def test_parseable_needs_a_finished_nonempty_line():
    assert check_parseable(Line("给句子分类", True), "instruction", 16) is None
    unfinished = check_parseable(Line("列出五种水果的", False), "instruction", 16)
    assert unfinished.rule == "unparseable" and "max_new_tokens=16" in unfinished.reason
    assert check_parseable(Line("  ", True), "output", 16).rule == "unparseable"
    assert check_parseable(Line("", True), "input", 16, allow_empty=True) is None
    assert check_parseable(Line("", False), "input", 16, allow_empty=True).rule == "unparseable"
    broken = check_parseable(Line("情导\ufffd\ufffd成大写字母", True), "instruction", 16)
    assert broken.rule == "unparseable" and "broken byte sequence" in broken.reason


def test_length_bounds_are_inclusive():
    assert check_length("一二三", 3, 5) is None and check_length(" 一二三四五 ", 3, 5) is None
    assert check_length("一二", 3, 5).rule == "too_short"
    assert check_length("一二三四五六", 3, 5).rule == "too_long"


def test_blocklist_matches_latin_whole_words_and_cjk_substrings():
    blocklist = ["image", "go to", "图片"]
    assert check_blocklist("Describe the IMAGE below", blocklist).rule == "blocklisted"
    assert check_blocklist("go to the store and buy milk", blocklist) is not None
    assert check_blocklist("描述这张图片", blocklist).reason == "instruction contains the blocklisted word '图片'"
    assert check_blocklist("Name an imaginative story", blocklist) is None  # 'image' is not a word here
    assert check_blocklist("ego tour planning", blocklist) is None


def test_duplicates_compare_normalised_instructions():
    pool = InstructionPool.from_instructions(["Write the word backwards."])
    assert normalize_instruction("  Write  the WORD backwards ") == "write the word backwards"
    verdict = check_duplicate("write the word backwards", pool)
    assert verdict.rule == "duplicate" and verdict.most_similar == "Write the word backwards."
    assert check_duplicate("写一首诗。", InstructionPool.from_instructions(["写一首诗"])).rule == "duplicate"
    assert check_duplicate("Write the sentence backwards", pool) is None


def test_similarity_threshold_rejects_at_and_above_it():
    pool = InstructionPool.from_instructions(["一二三四五六七八九十", "甲乙丙丁"])
    verdict = check_similarity("一二三四五六七甲乙丙", pool, 0.7)  # ROUGE-L exactly 0.7
    assert verdict.rule == "near_duplicate" and verdict.rouge_l == 0.7
    assert verdict.most_similar == "一二三四五六七八九十"
    assert check_similarity("一二三四五六戊己庚辛", pool, 0.7) is None  # 0.6
    assert pool.closest("一二三四五六戊己庚辛") == (pytest.approx(0.6), "一二三四五六七八九十")


def test_screen_applies_rules_in_order():
    pool = InstructionPool.from_instructions(HUMAN)
    settings = dict(min_chars=3, max_chars=20, blocklist=["图片"], rouge_threshold=0.7, max_new_tokens=8)
    assert screen_instruction(Line("图", False), pool, **settings).rule == "unparseable"
    assert screen_instruction(Line("图片", True), pool, **settings).rule == "too_short"
    assert screen_instruction(Line("把句子翻译成英文的图片", True), pool, **settings).rule == "blocklisted"
    assert screen_instruction(Line("把句子翻译成英文", True), pool, **settings).rule == "duplicate"
    assert screen_instruction(Line("把句子翻译成中文", True), pool, **settings).rule == "near_duplicate"
    assert screen_instruction(Line(" 给句子分类 ", True), pool, **settings) is None


def test_in_context_sampling_uses_generated_slots_once_they_exist():
    pool = InstructionPool.from_instructions(HUMAN)
    rng = random.Random(0)
    first = sample_in_context(pool, 6, 2, rng)
    assert len(first) == 8 and set(first) <= set(HUMAN)  # no generated yet: humans fill every slot
    for text in ["甲", "乙", "丙"]:
        pool.add_generated(text)
    for _ in range(20):
        examples = sample_in_context(pool, 6, 2, rng)
        assert len(set(examples)) == 8 and sum(text in "甲乙丙" for text in examples) == 2
    few = InstructionPool.from_instructions(HUMAN[:3])
    assert sorted(sample_in_context(few, 6, 2, rng)) == sorted(HUMAN[:3])


def test_instruction_prompt_lists_examples_and_ends_with_the_cue():
    prompt = instruction_prompt(["甲", "乙"], "任务：{instruction}\n\n", "任务：")
    assert prompt == "任务：甲\n\n任务：乙\n\n任务："
    assert instruction_prompt(["a"], "Task: {instruction}\n\n", "Task:", "Tasks:\n") == "Tasks:\nTask: a\n\nTask:"


def test_pool_from_table_picks_human_rows_by_source_prefix():
    table = pd.concat([build_table(HUMAN[:2]), build_table(["判断评论的情感", "判断评论的情感"], "dataset:sst")])
    pool = pool_from_table(table.reset_index(drop=True), ["seed:"], "build.parquet")
    assert pool.human == HUMAN[:2]
    assert pool.references == [*HUMAN[:2], "判断评论的情感"]  # converted rows are compared, once
    assert pool_from_table(table, None, "build.parquet").human == [*HUMAN[:2], "判断评论的情感"]
    with pytest.raises(ValueError, match="no human-written instructions"):
        pool_from_table(table, ["human:"], "build.parquet")
    with pytest.raises(ValueError, match="do not satisfy InstructionRow"):
        pool_from_table(table.assign(format="essay"), None, "build.parquet")


def test_config_checks_templates_and_bounds():
    SelfInstructConfig(input_template="Task: {instruction}\n\nInput:")
    with pytest.raises(ValidationError, match="output_template must contain the placeholders"):
        SelfInstructConfig(output_template="任务：{instruction}\n输出：")
    with pytest.raises(ValidationError, match="not a valid template"):
        SelfInstructConfig(input_template="{instruction} {oops}")
    with pytest.raises(ValidationError, match="min_instruction_chars exceeds"):
        SelfInstructConfig(min_instruction_chars=10, max_instruction_chars=5)
    with pytest.raises(ValidationError, match="extra"):
        SelfInstructConfig(rouge=0.5)
