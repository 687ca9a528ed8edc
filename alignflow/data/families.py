"""The built-in task families: verifiable synthetic tasks the demo corpus, the `demo_families`
build option and `demo_family` evaluation sources all draw from.

Families share input kinds (four tasks on English words, four on number pairs, two on sentences
per language), so an input alone does not say which task is asked. Items are split into train and
held-out by a hash of the *input*, the same for every family of a kind, so held-out inputs never
appear in training data under any task. Library data, not demo code: alignflow.demo builds its
pretraining corpus from it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from alignflow.data.lexicon import EN_ZH, PREDICATES, SUBJECTS

# The notes' format ("任务：… 输入：… 输出：") and its English variant.
FIELD_LABELS = {
    "zh": {"task": "任务：", "input": "输入：", "output": "输出："},
    "en": {"task": "Task: ", "input": "Input: ", "output": "Output: "},
}


@dataclass(frozen=True)
class Item:
    """One verifiable example: the family it belongs to, its input and its answer."""

    family: str
    input: str
    output: str


@dataclass(frozen=True)
class TaskFamily:
    """A task with verifiable answers; `kind` names the input pool it shares with other families."""

    name: str
    kind: str
    description: dict[str, str]
    items: tuple[Item, ...]
    languages: tuple[str, ...] = ("zh", "en")


def is_heldout(text: str, heldout_percent: int) -> bool:
    """Deterministic split by input text: stable across seeds, configs and processes."""
    bucket = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big") % 100
    return bucket < heldout_percent


def _family(name: str, kind: str, zh: str, en: str, inputs: list[str], answer: Callable[[str], str],
            languages: tuple[str, ...] = ("zh", "en")) -> TaskFamily:
    items = tuple(Item(name, x, answer(x)) for x in inputs)
    return TaskFamily(name, kind, {"zh": zh, "en": en}, items, languages)


def _number_pairs() -> list[str]:
    return [f"{a}, {b}" for a in range(13) for b in range(13)]


def _pair(text: str) -> tuple[int, int]:
    a, b = text.split(", ")
    return int(a), int(b)


def _sentences(language: str) -> list[tuple[str, str, str]]:
    """(sentence, sentiment label, topic label) for every subject x predicate."""
    rows = []
    for topic, subjects in SUBJECTS[language].items():
        for label, predicates in PREDICATES[language].items():
            for subject in subjects:
                for predicate in predicates:
                    if language == "zh":
                        rows.append((f"{subject}{predicate}。", label, topic))
                    else:
                        rows.append((f"{subject[0].upper()}{subject[1:]} {predicate}.", label, topic))
    return rows


def build_families() -> dict[str, TaskFamily]:
    """All demo task families, keyed by name."""
    words = sorted(EN_ZH)
    pairs = _number_pairs()
    families = [
        _family("translate", "word", "将英文单词翻译成中文", "translate the English word into Chinese",
                words, EN_ZH.__getitem__),
        _family("reverse", "word", "把单词的字母倒过来写", "write the word backwards", words, lambda w: w[::-1]),
        _family("uppercase", "word", "把单词改成大写字母", "write the word in capital letters", words, str.upper),
        _family("length", "word", "数一数单词有几个字母", "count the letters of the word", words,
                lambda w: str(len(w))),
        _family("add", "numbers", "计算两个数的和", "add the two numbers", pairs, lambda p: str(sum(_pair(p)))),
        _family("subtract", "numbers", "用第一个数减去第二个数", "subtract the second number from the first",
                pairs, lambda p: str(_pair(p)[0] - _pair(p)[1])),
        _family("maximum", "numbers", "找出较大的数", "give the larger number", pairs, lambda p: str(max(_pair(p)))),
        _family("multiply", "numbers", "计算两个数的积", "multiply the two numbers", pairs,
                lambda p: str(_pair(p)[0] * _pair(p)[1])),
    ]
    for language, (sent_zh, sent_en, topic_zh, topic_en) in {
        "zh": ("情感分析", "sentiment analysis", "判断评论的主题", "topic of the review"),
        "en": ("情感分析", "sentiment analysis", "判断评论的主题", "topic of the review"),
    }.items():
        rows = _sentences(language)
        sentiment = {s: label for s, label, _ in rows}
        topic = {s: t for s, _, t in rows}
        inputs = [s for s, _, _ in rows]
        families.append(_family(f"sentiment_{language}", f"sentence_{language}", sent_zh, sent_en, inputs,
                                sentiment.__getitem__, (language,)))
        families.append(_family(f"topic_{language}", f"sentence_{language}", topic_zh, topic_en, inputs,
                                topic.__getitem__, (language,)))
    return {f.name: f for f in families}


def split_items(family: TaskFamily, heldout_percent: int) -> tuple[list[Item], list[Item]]:
    """(train, held-out) items of a family."""
    train, heldout = [], []
    for item in family.items:
        (heldout if is_heldout(item.input, heldout_percent) else train).append(item)
    return train, heldout
