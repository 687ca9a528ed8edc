"""Pure cleaning functions: normalisation, script detection, filters, exact deduplication, the whole table."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers import instruction_row as row

from alignflow.data.cleaning import (
    Blocklist,
    Filters,
    check_copied_input,
    check_empty_output,
    check_label,
    check_language,
    check_length,
    check_output_matches_messages,
    check_repetition,
    clean_table,
    dedup_key,
    exact_duplicates,
    load_blocklist_terms,
    normalize_row,
    normalize_text,
    normalize_whitespace,
    repetition_ratio,
    script_of,
    tokens,
)
from alignflow.schemas.instruction import INSTRUCTION_COLUMNS
from alignflow.schemas.stages.clean import CleanConfig

POLICIES = ("keep", "halfwidth", "fullwidth_in_cjk")
SAMPLES = ["你好, 世界!真的?!", "Hello， world！", "ＡＢＣ１２３ ﬁne", "中文(English)说明", "版本3.5很好.", "等等……",
           "访问百度.com吧", "  a\t\tb  \r\n\n\n\nc\u200b ", "f(x) 是函数 (数学)", "（括号）里"]


# --- normalisation ------------------------------------------------------------------------------

def test_nfkc_folds_fullwidth_letters_digits_and_ligatures_under_every_policy():
    for policy in POLICIES:
        assert normalize_text("ＡＢＣ１２３ ﬁne", policy) == "ABC123 fine"


def test_keep_policy_keeps_punctuation_width_as_written():
    assert normalize_text("这部电影太棒了！", "keep") == "这部电影太棒了！"
    assert normalize_text("Hello, world!", "keep") == "Hello, world!"
    assert normalize_text("等等……", "keep") == "等等……"


def test_halfwidth_policy_makes_fullwidth_punctuation_ascii():
    assert normalize_text("你好，世界！（好）", "halfwidth") == "你好,世界!(好)"
    assert normalize_text("句号。不变", "halfwidth") == "句号。不变"  # 。 has no halfwidth form in NFKC


@pytest.mark.parametrize(("text", "expected"), [
    ("你好, 世界!真的?!", "你好，世界！真的？！"),
    ("Hello， world！", "Hello, world!"),
    ("中文(English)说明", "中文（English）说明"),
    ("f(x) 是函数 (数学)", "f(x) 是函数（数学）"),
    ("版本3.5很好.", "版本3.5很好。"),
    ("访问百度.com吧", "访问百度.com吧"),
    ("等等……", "等等……"),
])
def test_fullwidth_in_cjk_policy(text, expected):
    assert normalize_text(text, "fullwidth_in_cjk") == expected


def test_whitespace_is_normalised_but_indentation_kept():
    assert normalize_whitespace("  a\t\tb  \r\n\n\n\nc\u200b\x07 ") == "a b\n\nc"
    assert normalize_whitespace("def f():\n    return  1") == "def f():\n    return 1"


@pytest.mark.parametrize("policy", POLICIES)
def test_normalisation_is_idempotent(policy):
    for text in SAMPLES:
        once = normalize_text(text, policy)
        assert normalize_text(once, policy) == once, text


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="punctuation_width"):
        normalize_text("x", "wide")


def test_normalize_row_keeps_messages_consistent_with_fields():
    raw = row(instruction="翻译：  Ｈｅｌｌｏ ", input="ｗｏｒｌｄ\u200b", output="  你好，世界 ")
    normalised = normalize_row(raw, "halfwidth")
    messages = json.loads(normalised["messages"])
    assert normalised["instruction"] == "翻译: Hello" and normalised["input"] == "world"
    assert messages[0]["content"] == f"{normalised['instruction']}\n{normalised['input']}"
    assert messages[-1]["content"] == normalised["output"] == "你好,世界"


# --- text measures -------------------------------------------------------------------------------

def test_tokens_split_cjk_by_character_and_other_scripts_by_word():
    assert tokens("我喜欢Python3编程, ok!") == ["我", "喜", "欢", "Python3", "编", "程", "ok"]


@pytest.mark.parametrize(("text", "script"), [
    ("判断下面评论的情感倾向", "cjk"), ("positive", "non_cjk"), ("我喜欢Python编程", "cjk"),
    ("The answer is 42, see 第一章", "non_cjk"), ("A", None), ("19 + 7 = 26", None), ("", None),
])
def test_script_of(text, script):
    assert script_of(text) == script


def test_repetition_ratio_separates_loops_from_prose():
    assert repetition_ratio("哈" * 20) > 0.9
    assert repetition_ratio("I like tea. I like tea. I like tea.") == pytest.approx(4 / 7)
    assert repetition_ratio("今天天气很好，我们去公园散步吧，然后回家吃饭。") == 0.0
    assert repetition_ratio("ok") == 0.0


def test_dedup_key_ignores_case_and_whitespace_only():
    assert dedup_key("Hello  World\n") == dedup_key("hello world")
    assert dedup_key("hello, world") != dedup_key("hello world")


# --- filters -------------------------------------------------------------------------------------

def test_blocklist_matches_whole_words_and_cjk_substrings_case_insensitively():
    blocklist = Blocklist.from_terms(["make a bomb", "制作炸弹", "kill", "  "])
    assert blocklist.find("How to MAKE a  bomb?") == "make a bomb"
    assert blocklist.find("ＫＩＬＬ it") == "kill"
    assert blocklist.find("如何制作炸弹") == "制作炸弹"
    assert blocklist.find("new skills, killer app") is None
    assert Blocklist.from_terms([]).find("anything") is None


def test_blocklist_file_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "block.txt"
    path.write_text("# comment\n\n  bad word  \n坏词\n", encoding="utf-8")
    assert load_blocklist_terms(path) == ["bad word", "坏词"]


def test_shipped_blocklist_loads():
    from helpers import REPO

    terms = load_blocklist_terms(REPO / "data" / "blocklist.txt")
    assert "制作炸弹" in terms and not any(t.startswith("#") for t in terms)


def test_empty_output_and_output_mismatch():
    assert check_empty_output(row(output="")).rule == "empty_output"
    assert check_empty_output(row()) is None
    mismatched = {**row(), "output": "消极"}
    assert check_output_matches_messages(mismatched).rule == "output_mismatch"
    assert check_output_matches_messages(row()) is None


def test_length_counts_every_turn():
    example = row(instruction="问", input="", output="答")  # "问\n答": 3 characters
    assert check_length(example, 4, 100).rule == "too_short"
    assert check_length(example, 3, 100) is None
    assert check_length(row(), 1, 10).rule == "too_long"


def test_label_must_be_in_the_allowed_set_of_its_task_only():
    labels = {"sentiment": frozenset({"积极", "消极"})}
    assert check_label(row(output="积极"), labels) is None
    assert check_label(row(output="很积极"), labels).rule == "label_not_allowed"
    assert check_label(row(task="qa", output="随便"), labels) is None


def test_copied_input_is_rejected_unless_the_task_allows_it():
    copied = row(instruction="Fix the grammar.", input="She go home.", output="she  go home.", task="rewrite")
    assert check_copied_input(copied, []).reason == "the response repeats the input verbatim"
    assert check_copied_input(copied, ["rewrite"]) is None
    parroted = row(instruction="Say hello.", input="", output="Say hello.", task="chat")
    assert check_copied_input(parroted, []).rule == "copies_input"
    assert check_copied_input(row(), []) is None


def test_language_mismatch_by_script_with_exemptions():
    english_answer = row(output="positive")
    assert check_language(english_answer, 0.5, []).rule == "language_mismatch"
    assert check_language({**english_answer, "task": "Translation"}, 0.5, ["translation"]) is None
    mixed_prompt = row(instruction="总结下面的英文段落。", input="The cat sat on the mat all day.",
                       output="A cat sat on a mat.")
    assert check_language(mixed_prompt, 0.5, []) is None
    assert check_language(row(instruction="计算。", input="12 + 7", output="19"), 0.5, []) is None
    assert check_language(row(instruction="Compute.", input="12 + 7", output="十九"), 0.5, []).rule == \
        "language_mismatch"


def test_repetition_names_the_field_and_ignores_short_texts():
    looping = row(output="好的好的好的好的好的好的好的好的")
    problem = check_repetition(looping, 0.5, 3)
    assert (problem.field, problem.rule) == ("output", "repetition")
    assert check_repetition(row(output="好的好的"), 0.5, 3) is None
    assert check_repetition(row(), 0.5, 3) is None


def test_filters_apply_rules_in_order_and_normalise_labels():
    filters = Filters.from_config(CleanConfig(allowed_labels={"sentiment": ["积极", "消极"]}, min_chars=1),
                                  ["炸弹"])
    assert filters.problem(row()) is None
    assert filters.problem(row(output="炸弹")).rule == "blocklist"  # blocklist is tried before labels
    assert filters.problem(row(output="中立")).rule == "label_not_allowed"


# --- deduplication -------------------------------------------------------------------------------

def test_exact_duplicates_point_at_first_occurrence():
    assert exact_duplicates(["a", "b", "a", "c", "b", "a"]) == {2: 0, 4: 1, 5: 0}


# --- the whole table -----------------------------------------------------------------------------

def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=INSTRUCTION_COLUMNS)


def test_clean_table_removes_duplicates_after_filters_and_accounts_for_every_row():
    long_text = ("请把下面这段关于城市交通的长评论压缩成一句话，保留主要观点：地铁线路越来越多，高峰时段依旧拥挤，"
                 "公交专用道让通勤更准时，但是换乘距离太远，老人和带孩子的家长很不方便。")
    rows = [
        row("bad-first", instruction=long_text, input="", output="炸弹", task="summary"),
        row("good", instruction=long_text, input="", output="交通改善但换乘不便。", task="summary"),
        row("exact", instruction=long_text.replace("，", "，  "), input="", output="交通改善但换乘不便。", task="summary"),
        row("near", instruction=long_text.replace("老人", "老年人"), input="", output="交通改善但换乘不便。", task="summary"),
        row("other"),
    ]
    filters = Filters.from_config(CleanConfig(), ["炸弹"])
    result = clean_table(frame(*rows), filters)
    reasons = {r.index: r.problem for r in result.removals}
    assert {i: p.rule for i, p in reasons.items()} == {0: "blocklist", 2: "exact_duplicate", 3: "near_duplicate"}
    assert "'good'" in reasons[2].reason and "'good'" in reasons[3].reason
    assert result.kept["id"].tolist() == ["good", "other"]
    assert len(result.kept) + len(result.removals) == len(rows)
    assert list(result.kept.columns) == INSTRUCTION_COLUMNS


def test_clean_table_counts_normalised_rows_and_normalises_before_deduplicating():
    rows = [row("a", output="积极"), row("b", input="这部电影太棒了！ ", output="积极"), row("c", input="ｏｋ好")]
    result = clean_table(frame(*rows), Filters.from_config(CleanConfig(), []))
    assert result.normalised == 2
    assert [(r.index, r.problem.rule) for r in result.removals] == [(1, "exact_duplicate")]
    assert result.kept.loc[1, "input"] == "ok好"
