"""Synthetic few-shot corpus for the demo base model.

Task families share input kinds (four tasks on English words, four on number pairs, two on
sentences per language), so an input alone does not say which task is asked: without a task
line the model can only tell the task from the demonstrations before it. That is the notes'
in-context learning, P(y | [C; x]), at a scale that trains on two CPU cores.

The task families and their train/held-out split are alignflow.data.families.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import replace

from alignflow.data.families import FIELD_LABELS, Item, TaskFamily, build_families, split_items

# Stand-in label words of relabelled streams: random CJK characters (zh) or letter strings (en),
# so many that none can be memorised as a label, and the model learns to copy whatever the
# demonstrations use. The evaluation's never-seen label words (甲, 乙) are excluded, so held-out
# task learning stays held out.
EXCLUDED_STAND_INS = {"甲", "乙"}


def stand_in(language: str, rng: random.Random) -> str:
    if language == "zh":
        while (word := chr(rng.randrange(0x4E00, 0x9FA6))) in EXCLUDED_STAND_INS:
            continue
        return word
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 6)))


MAX_LABELS = 8  # a family with at most this many distinct answers is a classification task


def labels_of(family: TaskFamily) -> list[str]:
    """The family's answer set when it is a classification task (sentiment, topic), else []."""
    labels = sorted({item.output for item in family.items})
    return labels if len(labels) <= MAX_LABELS else []


def relabelled(items: list[Item], labels: list[str], language: str, rng: random.Random,
               flip_share: float = 0.5) -> list[Item]:
    """The stream's items with its labels mapped one-to-one to other words, the same map throughout
    the stream: with probability `flip_share` a permutation of the family's own labels (no label
    kept: a flipped sentiment), else stand-in words. Only the demonstrations say what each label is now, so the
    model must learn the mapping in context (bursty, per-stream mappings favour in-context learning
    over in-weights learning)."""
    if rng.random() < flip_share and len(labels) > 1:
        shift = rng.randrange(1, len(labels))  # a cyclic shift moves every label
        order = rng.sample(labels, len(labels))
        mapping = {order[i]: order[(i + shift) % len(order)] for i in range(len(order))}
    else:
        words: list[str] = []
        while len(words) < len(labels):
            word = stand_in(language, rng)
            if word not in words and word not in labels:
                words.append(word)
        mapping = dict(zip(labels, words, strict=True))
    return [replace(item, output=mapping[item.output]) for item in items]


def item_count(max_items: int, distribution: str, rng: random.Random) -> int:
    """Items in one stream: uniform over 1..max_items, or log-uniform (as many streams of 2-3 items as
    of 20-30: long many-shot streams without making every stream long)."""
    if distribution == "uniform":
        return rng.randint(1, max_items)
    return min(max_items, int(math.exp(rng.uniform(0.0, math.log(max_items + 1)))))


def bursty(items: list[Item], pool: list[Item], distinct: int, rng: random.Random) -> list[Item]:
    """As many items as `items`, drawn with replacement from `distinct` inputs of the pool: inputs recur
    within the stream, so a label can be read off an earlier example of the same input (the copying
    that in-context learning of a new mapping builds on)."""
    burst = rng.sample(pool, min(distinct, len(pool)))
    return [rng.choice(burst) for _ in items]


def format_example(item: Item, language: str) -> str:
    labels = FIELD_LABELS[language]
    return f"{labels['input']}{item.input}\n{labels['output']}{item.output}\n\n"


def format_stream(items: list[Item], language: str, description: str | None) -> str:
    """A few-shot stream in the notes' format: optional task line, then input/output pairs."""
    head = f"{FIELD_LABELS[language]['task']}{description}\n\n" if description else ""
    return head + "".join(format_example(item, language) for item in items)


def generate_streams(*, n_streams: int, max_items: int, description_prob: float, languages: list[str],
                     families: list[str] | None, heldout_percent: int, seed: int,
                     relabel_prob: float = 0.0, flip_share: float = 0.5, item_counts: str = "uniform",
                     repeat_prob: float = 0.0, repeat_inputs: int = 3) -> Iterator[dict]:
    """Yield corpus rows (family, language, n_items, has_description, relabelled, text), reproducibly
    from seed. With `relabel_prob`, that share of classification streams has its labels remapped
    (`relabelled`, flipped with probability `flip_share`); its task line, if any, still names the
    task (情感分析 with labels 天/地: the notes' semantically unrelated labels). With `repeat_prob`,
    that share of relabelled streams draws its items from `repeat_inputs` inputs (`bursty`)."""
    if item_counts not in ("uniform", "log_uniform"):
        raise ValueError(f"item_counts must be uniform or log_uniform, not {item_counts!r}")
    rng = random.Random(seed)
    catalogue = build_families()
    names = families or sorted(catalogue)
    unknown = sorted(set(names) - set(catalogue))
    if unknown:
        raise ValueError(f"unknown task families {unknown}; known: {sorted(catalogue)}")
    pools = {name: split_items(catalogue[name], heldout_percent)[0] for name in names}
    labels = {name: labels_of(catalogue[name]) for name in names}
    for _ in range(n_streams):
        family = catalogue[rng.choice(names)]
        usable = [lang for lang in family.languages if lang in languages] or list(family.languages)
        language = rng.choice(usable)
        n_items = item_count(max_items, item_counts, rng)
        items = rng.sample(pools[family.name], min(n_items, len(pools[family.name])))
        with_description = rng.random() < description_prob
        remap = relabel_prob > 0 and bool(labels[family.name]) and rng.random() < relabel_prob
        if remap:
            if repeat_prob > 0 and rng.random() < repeat_prob:
                items = bursty(items, pools[family.name], repeat_inputs, rng)
            items = relabelled(items, labels[family.name], language, rng, flip_share)
        description = family.description[language] if with_description else None
        yield {
            "family": family.name,
            "language": language,
            "n_items": len(items),
            "has_description": with_description,
            "relabelled": remap,
            "text": format_stream(items, language, description),
        }
