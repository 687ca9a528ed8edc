"""Prompt layout (the corpus's own format, lm-evaluation-harness's delimiters) and whole-shot fitting."""

from __future__ import annotations

from pathlib import Path

from alignflow.data.families import Item
from alignflow.demo.corpus import format_stream
from alignflow.evaluation.prompts import (
    build_context,
    continuation_text,
    description_text,
    fit_demonstrations,
)
from alignflow.evaluation.spec import EvalDoc, load_task

TASKS = Path(__file__).resolve().parents[1] / "data" / "eval" / "tasks"


def doc(text: str, target: str) -> EvalDoc:
    return EvalDoc(id=text, input=text, target=target, label=target)


def test_zh_prompt_is_the_pretraining_format_with_the_answer_left_open():
    spec = load_task(TASKS / "recognize_word.yaml")
    shots = [doc("apple", "苹果"), doc("cat", "猫")]
    stream = format_stream([Item("translate", s.input, s.target) for s in shots], "zh", None)
    assert build_context(spec, shots, doc("dog", "狗")) == stream + "输入：dog\n输出："
    assert continuation_text(spec, "狗") == "狗"


def test_en_prompt_puts_the_space_in_the_continuation_and_writes_the_task_line():
    spec = load_task(TASKS / "learn_sentiment_en_flipped.yaml").model_copy(update={"description": "sentiment"})
    context = build_context(spec, [doc("It was great.", "negative")], doc("It was bad.", "positive"))
    assert context == "Task: sentiment\n\nInput: It was great.\nOutput: negative\n\nInput: It was bad.\nOutput:"
    assert continuation_text(spec, "positive") == " positive"
    zh = load_task(TASKS / "learn_sentiment_zh_new_words.yaml")
    assert description_text(zh) == "任务：情感分析\n\n"


def test_demonstrations_that_do_not_fit_are_dropped_whole_earliest_first():
    spec = load_task(TASKS / "recognize_word.yaml")
    shots = [doc(f"w{i}", f"t{i}") for i in range(6)]
    query = doc("q", "a")
    count = len  # one "token" per character
    full = len(build_context(spec, shots, query)) + len("aa")
    kept = fit_demonstrations(spec, shots, query, count_tokens=count, max_tokens=full, longest_continuation="aa")
    assert kept.dropped == 0 and kept.shots == tuple(shots)
    cut = fit_demonstrations(spec, shots, query, count_tokens=count, max_tokens=full - 1, longest_continuation="aa")
    assert cut.dropped == 1 and cut.shots == tuple(shots[1:])
    assert cut.context == build_context(spec, shots[1:], query)  # never a partial demonstration
    tiny = fit_demonstrations(spec, shots, query, count_tokens=count, max_tokens=5)
    assert tiny.dropped == 6 and tiny.context == build_context(spec, [], query)
    unlimited = fit_demonstrations(spec, shots, query, count_tokens=count, max_tokens=None)
    assert unlimited.dropped == 0
