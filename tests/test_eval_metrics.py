"""Metrics against hand-computed values."""

from __future__ import annotations

import pytest

from alignflow.evaluation.metrics import (
    _normal_quantile,
    choice_predictions,
    contains,
    exact_match,
    rouge_l,
    wilson_interval,
)


def test_acc_and_acc_norm_disagree_when_length_matters_and_ties_go_first():
    # "a": -2 per char -> -2; "bbbb": -6 total -> -1.5 per char: acc picks "a", acc_norm picks "bbbb"
    assert choice_predictions([-2.0, -6.0], ["a", "bbbb"]) == (0, 1)
    assert choice_predictions([-1.0, -1.0, -3.0], ["x", "y", "z"]) == (0, 0)


def test_wilson_interval_matches_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27754), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low90, high90 = wilson_interval(5, 10, confidence=0.9)
    assert low90 > 0.23659 and high90 < 0.76341
    assert _normal_quantile(0.975) == pytest.approx(1.959964, abs=1e-6)


def test_generation_metrics():
    assert exact_match(" 苹果", "苹果") == 1.0 and exact_match("苹果汁", "苹果") == 0.0
    assert contains("我喜欢苹果", "苹果") == 1.0 and contains("橙子", "苹果") == 0.0
    # LCS("the cat sat", "the cat ran") = 2: P = R = 2/3
    assert rouge_l("the cat sat", "the cat ran") == pytest.approx(2 / 3)
    assert rouge_l("苹果好吃", "苹果") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert rouge_l("", "") == 0.0 and rouge_l("a", "b") == 0.0  # as rouge-score: nothing to match


def test_evaluation_scores_rouge_l_with_the_self_instruct_implementation():
    from alignflow.data import rouge
    from alignflow.evaluation.metrics import GENERATION_METRICS

    assert GENERATION_METRICS["rouge_l"] is rouge.rouge_l
    assert rouge_l("Hello, world!", "hello world") == 1.0
    assert rouge_l("state-of-the-art", "state of the art") == 1.0
