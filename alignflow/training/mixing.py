"""Multi-task mixing: how many training examples each task contributes (T5 / FLAN style).

Rates per task m with n_m rows available:
- examples-proportional with cap K: r_m ∝ min(n_m, K), so a huge task cannot drown the others;
- temperature T: r_m ∝ min(n_m, K) ** (1 / T); T = 1 is proportional, T → ∞ is uniform;
- explicit weights multiply the rate of a task (by name) and of rows from a source (by prefix of
  the `source` column, e.g. `seed`, `template`, `self_instruct`, `demo`).

The result is a fixed list of row indices (the training stream) of the requested length, so the
effective mix is exact and can be logged, instead of a sampler's expectation.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class MixSettings:
    cap: int | None = None
    temperature: float = 1.0
    task_weights: dict[str, float] | None = None
    source_weights: dict[str, float] | None = None


@dataclass(frozen=True)
class TaskShare:
    """One task's line of the effective mix."""

    task: str
    available: int  # rows of the task in the data
    rate: float  # share of the stream it was given
    drawn: int  # examples of the stream that come from it
    epochs: float  # drawn / available: above 1, rows repeat


def source_prefix(source: str) -> str:
    return source.split(":", 1)[0]


def task_rates(sizes: dict[str, float], settings: MixSettings) -> dict[str, float]:
    """Normalised sampling rate per task from its (source-weighted) size, cap, temperature and weight."""
    weights = settings.task_weights or {}
    raw = {}
    for task, size in sizes.items():
        capped = min(size, settings.cap) if settings.cap else size
        raw[task] = (capped ** (1.0 / settings.temperature) if capped > 0 else 0.0) * weights.get(task, 1.0)
    total = sum(raw.values())
    if total <= 0:
        raise ValueError("sft.mixing: every task has weight 0; nothing to train on")
    return {task: value / total for task, value in raw.items()}


def apportion(total: int, rates: dict[str, float]) -> dict[str, int]:
    """Integer counts summing to `total`, as close to total * rate as possible (largest remainder)."""
    exact = {task: total * rate for task, rate in rates.items()}
    counts = {task: math.floor(value) for task, value in exact.items()}
    leftover = total - sum(counts.values())
    for task in sorted(exact, key=lambda t: (counts[t] - exact[t], t))[:leftover]:
        counts[task] += 1
    return counts


def weighted_order(indices: list[int], weights: list[float], rng: random.Random) -> list[int]:
    """A random order in which heavier rows tend to come first (Efraimidis–Spirakis keys)."""
    keyed = [(rng.random() ** (1.0 / w), i) for i, w in zip(indices, weights, strict=True) if w > 0]
    return [i for _, i in sorted(keyed, reverse=True)]


def mix_stream(tasks: list[str], sources: list[str], length: int, settings: MixSettings,
               seed: int) -> tuple[list[int], list[TaskShare]]:
    """Row indices of a training stream of `length` examples, and the effective mix.

    Within a task, rows are taken in a weighted random order and the order is redrawn after each
    pass, so a row repeats only once every row of its task has been used.
    """
    source_weights = settings.source_weights or {}
    by_task: dict[str, list[int]] = defaultdict(list)
    for index, task in enumerate(tasks):
        by_task[task].append(index)
    row_weight = [source_weights.get(source_prefix(s), 1.0) for s in sources]
    sizes = {task: sum(row_weight[i] for i in rows) for task, rows in by_task.items()}
    rates = task_rates(sizes, settings)
    counts = apportion(length, rates)
    rng = random.Random(seed)
    stream: list[int] = []
    shares = []
    for task in sorted(by_task):
        rows = by_task[task]
        weights = [row_weight[i] for i in rows]
        drawn: list[int] = []
        while len(drawn) < counts[task]:
            drawn += weighted_order(rows, weights, rng)[: counts[task] - len(drawn)]
        stream += drawn
        usable = sum(1 for w in weights if w > 0)
        shares.append(TaskShare(task, len(rows), rates[task], counts[task], counts[task] / max(usable, 1)))
    rng.shuffle(stream)
    return stream, shares
