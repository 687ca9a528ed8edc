"""Synthetic few-shot corpus for the demo base model.

Task families share input kinds (four tasks on English words, four on number pairs, two on
sentences per language), so an input alone does not say which task is asked: without a task
line the model can only tell the task from the demonstrations before it. That is the notes'
in-context learning, P(y | [C; x]), at a scale that trains on two CPU cores.

The task families and their train/held-out split are alignflow.data.families.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from alignflow.data.families import FIELD_LABELS, Item, build_families, split_items


def format_example(item: Item, language: str) -> str:
    labels = FIELD_LABELS[language]
    return f"{labels['input']}{item.input}\n{labels['output']}{item.output}\n\n"


def format_stream(items: list[Item], language: str, description: str | None) -> str:
    """A few-shot stream in the notes' format: optional task line, then input/output pairs."""
    head = f"{FIELD_LABELS[language]['task']}{description}\n\n" if description else ""
    return head + "".join(format_example(item, language) for item in items)


def generate_streams(*, n_streams: int, max_items: int, description_prob: float, languages: list[str],
                     families: list[str] | None, heldout_percent: int, seed: int) -> Iterator[dict]:
    """Yield corpus rows (family, language, n_items, has_description, text), reproducibly from seed."""
    rng = random.Random(seed)
    catalogue = build_families()
    names = families or sorted(catalogue)
    unknown = sorted(set(names) - set(catalogue))
    if unknown:
        raise ValueError(f"unknown task families {unknown}; known: {sorted(catalogue)}")
    pools = {name: split_items(catalogue[name], heldout_percent)[0] for name in names}
    for _ in range(n_streams):
        family = catalogue[rng.choice(names)]
        usable = [lang for lang in family.languages if lang in languages] or list(family.languages)
        language = rng.choice(usable)
        n_items = rng.randint(1, max_items)
        items = rng.sample(pools[family.name], min(n_items, len(pools[family.name])))
        with_description = rng.random() < description_prob
        description = family.description[language] if with_description else None
        yield {
            "family": family.name,
            "language": language,
            "n_items": len(items),
            "has_description": with_description,
            "text": format_stream(items, language, description),
        }
