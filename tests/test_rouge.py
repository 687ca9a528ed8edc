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


def test_punctuation_and_case_never_count():
    assert rouge_tokens("Hello, world!") == rouge_tokens("hello world") == ["hello", "world"]
    assert rouge_l("Hello, world!", "hello world") == 1.0
    assert rouge_l("state-of-the-art", "state of the art") == 1.0
    assert rouge_tokens("你好，世界！Hi—there") == ["你", "好", "世", "界", "hi", "there"]
    assert rouge_tokens("Café 'naïve' Привет") == ["café", "naïve", "привет"]  # other letters stay whole


ENGLISH = [
    ("The quick brown fox jumps over the lazy dog.", "A quick brown dog jumps over the lazy fox!"),
    ("Summarise the article in one sentence.", "Write a one-sentence summary of the article."),
    ("It's 3:45 p.m., and the U.S.-based team (12 people) left.", "the US based team of 12 left at 3 45 pm"),
    ("Translate 'good morning' into French.", "Translate good-morning to French, please."),
    ("", "nothing to match"),
    ("Numbers: 1, 22, 333; words: one two three", "one 1 two 22 three 333"),
]


@pytest.mark.parametrize(("candidate", "reference"), ENGLISH)
def test_english_scores_equal_rouge_score(candidate, reference):
    from rouge_score import rouge_scorer  # test-only dependency (the dev extra)

    expected = rouge_scorer.RougeScorer(["rougeL"]).score(reference, candidate)["rougeL"].fmeasure
    assert rouge_l(candidate, reference) == pytest.approx(expected, abs=1e-12)
