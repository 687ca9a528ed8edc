"""Prompt strings in lm-evaluation-harness's layout, and whole-demonstration fitting.

context      = description + sum(text(shot) + target_delimiter + answer(shot) + fewshot_delimiter) + text(doc)
continuation = target_delimiter + choice

`fit_demonstrations` drops demonstrations that do not fit the context window whole (never
cutting one mid-example), the ones farthest from the query first, and says how many it dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from alignflow.data.families import FIELD_LABELS
from alignflow.evaluation.spec import EvalDoc, TaskSpec


def description_text(spec: TaskSpec) -> str:
    """The task line, or '' when the task has none (it must then be read from the demonstrations)."""
    if not spec.description:
        return ""
    return spec.description_template.format(task_label=FIELD_LABELS[spec.language]["task"],
                                            description=spec.description)


def doc_text(spec: TaskSpec, doc: EvalDoc) -> str:
    """A document's text: what precedes its answer (e.g. '输入：apple\\n输出：')."""
    return spec.text_format.format(input=doc.input)


def demonstration_text(spec: TaskSpec, doc: EvalDoc) -> str:
    """One solved example, delimiters included."""
    return doc_text(spec, doc) + spec.target_delim + doc.target + spec.fewshot_delimiter


def build_context(spec: TaskSpec, shots: Sequence[EvalDoc], doc: EvalDoc) -> str:
    return description_text(spec) + "".join(demonstration_text(spec, s) for s in shots) + doc_text(spec, doc)


def continuation_text(spec: TaskSpec, choice: str) -> str:
    return spec.target_delim + choice


@dataclass(frozen=True)
class FittedPrompt:
    """A context that fits, the demonstrations it kept, and how many were dropped."""

    context: str
    shots: tuple[EvalDoc, ...]
    dropped: int


def fit_demonstrations(spec: TaskSpec, shots: Sequence[EvalDoc], doc: EvalDoc, *,
                       count_tokens: Callable[[str], int], max_tokens: int | None,
                       longest_continuation: str = "") -> FittedPrompt:
    """Keep as many whole demonstrations as fit in `max_tokens` together with the document.

    The demonstrations nearest the query (the last ones) are kept; earlier ones are dropped
    whole. Token counts come from `count_tokens` (the model's tokenizer), with the longest
    continuation included so that every choice fits.
    """
    kept = list(shots)

    def size(current: list[EvalDoc]) -> int:
        return count_tokens(build_context(spec, current, doc) + longest_continuation)

    if max_tokens is not None:
        while kept and size(kept) > max_tokens:
            kept.pop(0)
    return FittedPrompt(build_context(spec, kept, doc), tuple(kept), len(shots) - len(kept))
