"""Self-Instruct's pure parts: the instruction pool, prompts, in-context sampling and filters.

Wang et al. (2022) bootstrap instructions from a small human-written pool: a model sees 8
instructions (6 human-written, 2 generated earlier) and writes a new one; new instructions
that are malformed, out of length bounds, about things a text model cannot do (blocklist),
duplicates, or too close to the pool (ROUGE-L >= 0.7) are dropped; the rest join the pool
and get an input and an output. Every filter here returns a `Verdict` (why a candidate is
rejected) or None, so the stage can record every rejection with its rule and reason.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from alignflow.data import instructions
from alignflow.data.rouge import most_similar, rouge_tokens
from alignflow.data.tables import validate_instructions
from alignflow.errors import DataError

REPLACEMENT_CHARACTER = "\ufffd"
RULES = ("unparseable", "too_short", "too_long", "blocklisted", "duplicate", "near_duplicate", "schema")


@dataclass(frozen=True)
class Line:
    """One generated continuation, cut at the first newline.

    `finished` is False when generation ran out of tokens before the line ended: the text is
    then a fragment, not something the model chose to stop.
    """

    text: str
    finished: bool


@dataclass(frozen=True)
class Verdict:
    """Why a candidate is rejected: a short rule name, the field it concerns, a readable reason."""

    rule: str
    field: str
    reason: str
    rouge_l: float | None = None
    most_similar: str = ""


def normalize_instruction(text: str) -> str:
    """The form two instructions are compared in for exact duplicates (case, width, spacing, end)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"\s+", " ", text).strip()
    return text.rstrip(" .。!！?？:：;；")


@dataclass
class InstructionPool:
    """The instructions a new one must differ from, and the ones in-context examples come from.

    `human` are the human-written instructions (the 6 human slots), `generated` the machine
    ones accepted so far (the 2 generated slots); `references` is everything a candidate is
    compared with (all build rows plus accepted generated ones).
    """

    human: list[str]
    generated: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    _tokens: list[list[str]] = field(default_factory=list, repr=False)
    _normalized: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_instructions(cls, human: Iterable[str], others: Iterable[str] = ()) -> InstructionPool:
        """A pool of unique human instructions, compared also against `others` (e.g. converted datasets)."""
        pool = cls(human=list(dict.fromkeys(human)))
        for text in [*pool.human, *others]:
            pool._add_reference(text)
        return pool

    def _add_reference(self, text: str) -> None:
        key = normalize_instruction(text)
        if key in self._normalized:
            return
        self._normalized[key] = text
        self.references.append(text)
        self._tokens.append(rouge_tokens(text))

    def add_generated(self, text: str) -> None:
        self.generated.append(text)
        self._add_reference(text)

    def same_as(self, text: str) -> str | None:
        """The pool instruction `text` duplicates after normalisation, if any."""
        return self._normalized.get(normalize_instruction(text))

    def closest(self, text: str) -> tuple[float, str]:
        """(ROUGE-L, instruction) of the most similar pool instruction; (0.0, "") for none."""
        score, index = most_similar(rouge_tokens(text), self._tokens)
        return score, (self.references[index] if index >= 0 else "")


def sample_in_context(pool: InstructionPool, num_human: int, num_generated: int,
                      rng: random.Random) -> list[str]:
    """`num_generated` generated and `num_human` human instructions, shuffled.

    While fewer generated instructions exist than asked for, human ones fill their slots, as
    in the paper's first rounds.
    """
    generated = rng.sample(pool.generated, min(num_generated, len(pool.generated)))
    wanted_human = num_human + num_generated - len(generated)
    human = rng.sample(pool.human, min(wanted_human, len(pool.human)))
    examples = human + generated
    rng.shuffle(examples)
    return examples


def instruction_prompt(examples: list[str], example_template: str, cue: str, header: str = "") -> str:
    """Instructions listed in the corpus format, ending with the cue the model continues."""
    return header + "".join(example_template.format(instruction=text) for text in examples) + cue


def check_parseable(line: Line, field: str, max_new_tokens: int, *, allow_empty: bool = False) -> Verdict | None:
    """The model must end the line itself, write something (unless allowed) and write whole characters.

    Byte-level models can emit a byte sequence that is not UTF-8; decoding shows U+FFFD there.
    """
    if not line.finished:
        return Verdict("unparseable", field, f"{field} did not end within max_new_tokens={max_new_tokens} "
                                             f"(no newline or end token): {line.text[:80]!r}")
    if not allow_empty and not line.text.strip():
        return Verdict("unparseable", field, f"empty {field}")
    if REPLACEMENT_CHARACTER in line.text:
        return Verdict("unparseable", field, f"{field} is not valid text (the model wrote a broken byte "
                                             f"sequence): {line.text[:80]!r}")
    return None


def check_length(instruction: str, min_chars: int, max_chars: int) -> Verdict | None:
    """Instruction length in characters (whitespace at the ends not counted)."""
    length = len(instruction.strip())
    if length < min_chars:
        return Verdict("too_short", "instruction", f"instruction has {length} characters, fewer than {min_chars}")
    if length > max_chars:
        return Verdict("too_long", "instruction", f"instruction has {length} characters, more than {max_chars}")
    return None


def find_blocked_word(text: str, blocklist: list[str]) -> str | None:
    """The first blocklisted word in `text`: latin words match whole words, others as substrings."""
    lowered = text.lower()
    for word in blocklist:
        needle = word.lower()
        if re.fullmatch(r"[a-z0-9 ]+", needle):
            if re.search(rf"(?<![a-z0-9]){re.escape(needle)}(?![a-z0-9])", lowered):
                return word
        elif needle in lowered:
            return word
    return None


def check_blocklist(instruction: str, blocklist: list[str]) -> Verdict | None:
    """Tasks a text model cannot do (images, files, audio...) or that the user refuses."""
    word = find_blocked_word(instruction, blocklist)
    if word is None:
        return None
    return Verdict("blocklisted", "instruction", f"instruction contains the blocklisted word {word!r}")


def check_duplicate(instruction: str, pool: InstructionPool) -> Verdict | None:
    """Exactly the same instruction (after normalisation) as one in the pool."""
    same = pool.same_as(instruction)
    if same is None:
        return None
    return Verdict("duplicate", "instruction", f"same instruction as pool instruction {same!r}", 1.0, same)


def check_similarity(instruction: str, pool: InstructionPool, threshold: float) -> Verdict | None:
    """ROUGE-L against the most similar pool instruction must stay below `threshold`."""
    score, closest = pool.closest(instruction)
    if score < threshold:
        return None
    return Verdict("near_duplicate", "instruction",
                   f"ROUGE-L {score:.3f} >= {threshold} with pool instruction {closest!r}", score, closest)


def screen_instruction(line: Line, pool: InstructionPool, *, min_chars: int, max_chars: int,
                       blocklist: list[str], rouge_threshold: float, max_new_tokens: int) -> Verdict | None:
    """The instruction filters in order (cheap ones first); the first that fails is the verdict."""
    instruction = line.text.strip()
    return (check_parseable(line, "instruction", max_new_tokens)
            or check_length(instruction, min_chars, max_chars)
            or check_blocklist(instruction, blocklist)
            or check_duplicate(instruction, pool)
            or check_similarity(instruction, pool, rouge_threshold))


def basic_messages(instruction: str, input_text: str, output: str) -> str:
    """The `messages` column of a generated row: the same chat form build gives basic rows."""
    return json.dumps(instructions.basic_messages(instruction, input_text, output), ensure_ascii=False)


def pool_from_table(frame: pd.DataFrame, human_sources: list[str] | None, source: str) -> InstructionPool:
    """The pool from a build table (InstructionRow): human rows by `source` prefix, all rows as references."""
    valid, problems = validate_instructions(frame, stage="self_instruct", source=source)
    if len(problems):
        first = "; ".join(f"row {p.row} {p.rule}: {p.reason[:120]}" for p in problems.head(3).itertuples())
        raise DataError(f"{source}: {len(problems)} rows do not satisfy InstructionRow ({first})")
    human = valid if human_sources is None else valid[valid["source"].str.startswith(tuple(human_sources))]
    if human.empty:
        raise DataError(f"{source}: no human-written instructions (rows whose source starts with "
                         f"{human_sources}) among {len(valid)} rows")
    return InstructionPool.from_instructions(human["instruction"], valid["instruction"])
