"""ROUGE-L on mixed Chinese and English text, against hand-computed values."""

from __future__ import annotations

import random

import pytest

from alignflow.data.rouge import lcs_length, most_similar, rouge_l, rouge_tokens


def test_rouge_tokens_split_cjk_characters_and_lowercase_latin_words():
    assert rouge_tokens("将英文单词 Apple 翻译成中文, 42 times!") == [
        "将", "英", "文", "单", "词", "apple", "翻", "译", "成", "中", "文", "42", "times"]
    assert rouge_tokens("。，！ ... ") == []


def test_lcs_length_matches_hand_computed_values():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # CLRS: BCBA
    assert lcs_length(list("把单词倒过来写"), list("把单词的字母倒过来写")) == 7
    assert lcs_length([], list("abc")) == 0


def test_rouge_l_matches_hand_computed_values():
    # 7 of 7 candidate tokens in a 10-token reference: P = 1, R = 0.7, F = 2*7/(7+10)
    assert rouge_l("把单词倒过来写", "把单词的字母倒过来写") == pytest.approx(14 / 17)
    # "write the word backwards" vs "write the sentence backwards": LCS 3 of 4 and 4 -> 0.75
    assert rouge_l("Write the word backwards.", "write the SENTENCE backwards") == pytest.approx(0.75)
    assert rouge_l("翻译 apple", "apple 翻译") == pytest.approx(2 * 2 / 6)  # LCS 2 of 3 and 3 tokens
    assert rouge_l("abc", "xyz") == 0.0
    assert rouge_l("", "任务") == 0.0
    assert rouge_l("一二三四五六七甲乙丙", "一二三四五六七八九十") == 0.7  # exactly, not an ulp below


def test_most_similar_with_pruning_equals_brute_force():
    rng = random.Random(0)
    alphabet = "一二三四五六七八"
    references = [[rng.choice(alphabet) for _ in range(rng.randint(0, 12))] for _ in range(60)]
    for _ in range(40):
        candidate = [rng.choice(alphabet) for _ in range(rng.randint(1, 12))]
        brute = [2 * lcs_length(candidate, r) / (len(candidate) + len(r)) for r in references]
        score, index = most_similar(candidate, references)
        assert score == pytest.approx(max(brute))
        assert brute[index] == pytest.approx(score)
    assert most_similar([], references) == (0.0, -1)
    assert most_similar(["甲"], [["乙"]]) == (0.0, -1)
