"""Cleaning instruction rows (notes, ch. 2: 去重 / 过滤 / 标准化 / 一致性检查), as pure functions.

`clean_table` normalises every row, runs the row filters (first failing rule wins, so each
removed row has exactly one reason), then removes exact and near duplicates among the rows
left. Filters run before deduplication so that a bad row never "claims" a cluster whose good
copy would then be dropped.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from alignflow.data.minhash import near_duplicates
from alignflow.schemas.stages.clean import CleanConfig

TEXT_FIELDS = ("instruction", "input", "output")
RULES = ("empty_output", "output_mismatch", "too_short", "too_long", "blocklist", "label_not_allowed",
         "copies_input", "language_mismatch", "repetition", "exact_duplicate", "near_duplicate")
MIN_REPETITION_TOKENS = 10  # shorter texts repeat by chance ("积极，积极") and are not judged
MIN_LANGUAGE_LETTERS = 2  # fewer letters ("A", "19") say nothing about the language

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"  # kana, Han, Hangul
_CJK_CHAR = re.compile(f"[{_CJK}]")
_TOKEN = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")  # one CJK character, or a run of other letters/digits
_WORD = re.compile(f"[^\\W\\d_{_CJK}]+")  # a run of letters in other scripts
# Fullwidth ASCII punctuation and ellipses: NFKC would make them halfwidth ("！" -> "!").
_WIDE_PUNCTUATION = re.compile("([\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff5e\u2025\u2026]+)")
_ELLIPSIS = re.compile("([\u2025\u2026]+)")
_TO_FULLWIDTH = {",": "，", "!": "！", "?": "？", ":": "：", ";": "；", "(": "（", ")": "）", ".": "。"}
# Zero-width space, word joiner, BOM, and control characters other than tab and newline.
_INVISIBLE = dict.fromkeys([0x200B, 0x2060, 0xFEFF, *range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)])
_INNER_SPACE = re.compile(r"(?<=\S)[^\S\n]+")  # runs of spaces after text; leading indentation stays
_SPACE_AT_LINE_END = re.compile(r"[^\S\n]+\n")
_BLANK_LINES = re.compile(r"\n{3,}")
# Fullwidth and CJK marks carry their own spacing; spaces around them are typing noise.
_WIDE_MARKS = "\u3001\u3002\u300a-\u300f\u3010\u3011\u2026\uff01\uff08\uff09\uff0c\uff1a\uff1b\uff1f"  # 、。《》「」…！（），：；？
_SPACED_WIDE_MARK = re.compile(f"[^\\S\\n]*([{_WIDE_MARKS}]+)[^\\S\\n]*")


# --- normalisation -------------------------------------------------------------------------------

def is_cjk(char: str) -> bool:
    return _CJK_CHAR.fullmatch(char) is not None


def _nfkc_except(text: str, protected: re.Pattern) -> str:
    """NFKC on everything but the runs `protected` matches (its pattern has one capturing group)."""
    parts = protected.split(text)
    return "".join(part if k % 2 else unicodedata.normalize("NFKC", part) for k, part in enumerate(parts))


def _widen_in_cjk(text: str) -> str:
    """ASCII punctuation right after CJK text becomes fullwidth, without spaces around it.

    "(" also widens before CJK text, and ")" follows its "(" so brackets stay a pair.
    """
    out: list[str] = []
    widened = set(_TO_FULLWIDTH.values())
    open_brackets: list[bool] = []  # for each open "(", whether it was widened
    for k, char in enumerate(text):
        wide = _TO_FULLWIDTH.get(char)
        before = next((c for c in reversed(out) if c != " "), "")
        after = text[k + 1 : k + 2]
        in_cjk = is_cjk(before) or before in widened
        if char == "(":
            in_cjk = in_cjk or is_cjk(text[k + 1 :].lstrip(" ")[:1])
            open_brackets.append(in_cjk)
        elif char == ")" and open_brackets:
            in_cjk = open_brackets.pop()
        elif char == "." and (after == "." or before == "." or (after.isascii() and after.isalnum())):
            in_cjk = False  # "...", decimals and names like 百度.com stay as written
        if wide and in_cjk:
            while out and out[-1] == " ":
                out.pop()
            out.append(wide)
        elif not (char == " " and out and out[-1] in widened):
            out.append(char)
    return "".join(out)


def normalize_whitespace(text: str) -> str:
    """Unix newlines, no invisible or control characters, single inner spaces, no spaces around
    fullwidth marks, at most one blank line; leading indentation (code) is kept."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_INVISIBLE)
    text = _SPACE_AT_LINE_END.sub("\n", _INNER_SPACE.sub(" ", text))
    text = _SPACED_WIDE_MARK.sub(r"\1", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def normalize_text(text: str, punctuation_width: str = "keep") -> str:
    """NFKC (full-width letters and digits, compatibility forms), whitespace, then the punctuation policy.

    keep: punctuation stays as written; halfwidth: plain NFKC (，！？ -> ,!?); fullwidth_in_cjk:
    halfwidth everywhere, then fullwidth again where it follows CJK text (ellipses kept).
    """
    if punctuation_width == "keep":
        text = _nfkc_except(text, _WIDE_PUNCTUATION)
    elif punctuation_width == "fullwidth_in_cjk":
        text = _nfkc_except(text, _ELLIPSIS)
    elif punctuation_width == "halfwidth":
        text = unicodedata.normalize("NFKC", text)
    else:
        raise ValueError(f"unknown punctuation_width {punctuation_width!r}")
    text = normalize_whitespace(text)
    return _widen_in_cjk(text) if punctuation_width == "fullwidth_in_cjk" else text


def normalize_messages(messages: str, punctuation_width: str = "keep") -> str:
    """The same normalisation applied to every turn of a conversation stored as JSON."""
    turns = json.loads(messages)
    turns = [{**turn, "content": normalize_text(turn["content"], punctuation_width)} for turn in turns]
    return json.dumps(turns, ensure_ascii=False)


def normalize_row(row: dict, punctuation_width: str = "keep") -> dict:
    """A row with its text fields and its messages normalised alike, so they stay consistent."""
    normalised = {**row, **{f: normalize_text(row[f], punctuation_width) for f in TEXT_FIELDS}}
    normalised["messages"] = normalize_messages(row["messages"], punctuation_width)
    return normalised


# --- text measures -------------------------------------------------------------------------------

def contents(messages: str) -> list[str]:
    return [turn["content"] for turn in json.loads(messages)]


def example_text(row: dict) -> str:
    """Everything the model sees of an example: the contents of all its turns."""
    return "\n".join(contents(row["messages"]))


def dedup_key(text: str) -> str:
    """Text compared for duplicates: case and whitespace differences do not make rows different."""
    return " ".join(text.casefold().split())


def tokens(text: str) -> list[str]:
    """CJK characters one by one, other words and numbers whole: comparable units across scripts."""
    return _TOKEN.findall(text)


def script_of(text: str, cjk_ratio: float = 0.5) -> str | None:
    """"cjk" or "non_cjk" by the share of CJK characters among letter units; None with too few letters."""
    cjk = len(_CJK_CHAR.findall(text))
    words = _WORD.findall(text)
    if cjk + sum(map(len, words)) < MIN_LANGUAGE_LETTERS:
        return None
    return "cjk" if cjk / (cjk + len(words)) >= cjk_ratio else "non_cjk"


def repetition_ratio(text: str, n: int = 3) -> float:
    """Share of the token n-grams of `text` that repeat an earlier one (0: none, near 1: a loop)."""
    units = tokens(text)
    total = len(units) - n + 1
    grams = zip(*(units[i:] for i in range(n)), strict=False)  # n shifted copies, cut to the shortest
    return 1.0 - len(set(grams)) / total if total > 0 else 0.0


# --- filters ---------------------------------------------------------------------------------------

def load_blocklist_terms(path: Path) -> list[str]:
    """Terms of a blocklist file: one per line; blank lines and # comments ignored."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _fold(text: str) -> str:
    """NFKC, casefold, single spaces: how blocklist terms and texts are compared."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass(frozen=True)
class Blocklist:
    """Blocked terms, matched case-insensitively: CJK terms anywhere, other terms as whole words."""

    pattern: re.Pattern | None

    @classmethod
    def from_terms(cls, terms: Iterable[str]) -> Blocklist:
        folded = sorted({_fold(t) for t in terms if t.strip()}, key=len, reverse=True)
        if not folded:
            return cls(None)
        anywhere = [re.escape(t) for t in folded if _CJK_CHAR.search(t)]
        words = [re.escape(t) for t in folded if not _CJK_CHAR.search(t)]
        if words:  # one boundary check around all word terms, not one per term
            anywhere.append(rf"(?<!\w)(?:{'|'.join(words)})(?!\w)")
        return cls(re.compile("|".join(anywhere)))

    def find(self, text: str) -> str | None:
        """The first blocked term in `text`, or None."""
        if self.pattern is None:
            return None
        match = self.pattern.search(_fold(text))
        return match.group(0) if match else None


@dataclass(frozen=True)
class Problem:
    """Why a row is removed: the offending field ("" for the whole row), a rule name and a reason."""

    field: str
    rule: str
    reason: str


def _fields(row: dict) -> list[tuple[str, str]]:
    """(field, text) pairs to screen: the text columns, then the turns that are not just those columns
    (earlier turns of a dialogue live only in messages)."""
    columns = {row["output"], row["instruction"], f"{row['instruction']}\n{row['input']}"}
    return [(f, row[f]) for f in TEXT_FIELDS] + [("messages", c) for c in contents(row["messages"]) if c not in columns]


def check_empty_output(row: dict) -> Problem | None:
    if not row["output"].strip() or not contents(row["messages"])[-1].strip():
        return Problem("output", "empty_output", "the response is empty after normalisation")
    return None


def check_output_matches_messages(row: dict) -> Problem | None:
    """The output column must be the conversation's final assistant turn (SFT trains on messages)."""
    last = contents(row["messages"])[-1]
    if last != row["output"]:
        return Problem("messages", "output_mismatch",
                       f"the last assistant message {last[:80]!r} differs from output {row['output'][:80]!r}")
    return None


def check_length(row: dict, min_chars: int, max_chars: int) -> Problem | None:
    size = len(example_text(row))
    if size < min_chars:
        return Problem("", "too_short", f"{size} characters, fewer than min_chars={min_chars}")
    if size > max_chars:
        return Problem("", "too_long", f"{size} characters, more than max_chars={max_chars}")
    return None


def check_blocklist(row: dict, blocklist: Blocklist) -> Problem | None:
    for field, text in _fields(row):
        if term := blocklist.find(text):
            return Problem(field, "blocklist", f"contains the blocked term {term!r}")
    return None


def check_label(row: dict, allowed_labels: dict[str, frozenset[str]]) -> Problem | None:
    allowed = allowed_labels.get(row["task"])
    if allowed is not None and row["output"] not in allowed:
        return Problem("output", "label_not_allowed",
                       f"output {row['output'][:80]!r} is not an allowed label of task {row['task']!r} "
                       f"({sorted(allowed)})")
    return None


def check_copied_input(row: dict, copy_allowed_tasks: Iterable[str]) -> Problem | None:
    """A response that only repeats its input (or, without input, its instruction) teaches nothing."""
    if row["task"] in copy_allowed_tasks:
        return None
    output = dedup_key(row["output"])
    for field in ("input", "instruction"):
        if output and output == dedup_key(row[field]):
            return Problem("output", "copies_input", f"the response repeats the {field} verbatim")
    return None


def check_language(row: dict, cjk_ratio: float, cross_lingual_tasks: Iterable[str]) -> Problem | None:
    """The response must share a script with the instruction or the input, unless the task crosses them."""
    if row["task"].casefold() in {t.casefold() for t in cross_lingual_tasks}:
        return None
    answer = script_of(row["output"], cjk_ratio)
    prompt = {script_of(row[f], cjk_ratio) for f in ("instruction", "input")} - {None}
    if answer is None or not prompt or answer in prompt:
        return None
    return Problem("output", "language_mismatch",
                   f"the response is {answer} text but the prompt is {' and '.join(sorted(prompt))}")


def check_repetition(row: dict, max_ratio: float, n: int) -> Problem | None:
    for field, text in _fields(row):
        if len(tokens(text)) >= MIN_REPETITION_TOKENS and (ratio := repetition_ratio(text, n)) > max_ratio:
            return Problem(field, "repetition", f"{ratio:.0%} of its {n}-grams repeat (max {max_ratio:.0%})")
    return None


@dataclass(frozen=True)
class Filters:
    """The row filters of one configuration, in the order they are tried."""

    settings: CleanConfig
    blocklist: Blocklist
    allowed_labels: dict[str, frozenset[str]]

    @classmethod
    def from_config(cls, settings: CleanConfig, blocklist_terms: Iterable[str]) -> Filters:
        width = settings.punctuation_width
        labels = {task: frozenset(normalize_text(label, width) for label in labels)
                  for task, labels in settings.allowed_labels.items()}
        return cls(settings, Blocklist.from_terms(blocklist_terms), labels)

    def problem(self, row: dict) -> Problem | None:
        """The first rule a (normalised) row breaks, or None."""
        s = self.settings
        return (check_empty_output(row) or check_output_matches_messages(row)
                or check_length(row, s.min_chars, s.max_chars) or check_blocklist(row, self.blocklist)
                or check_label(row, self.allowed_labels) or check_copied_input(row, s.copy_allowed_tasks)
                or check_language(row, s.cjk_ratio, s.cross_lingual_tasks)
                or check_repetition(row, s.max_repetition_ratio, s.repetition_ngram))


# --- deduplication and the whole table --------------------------------------------------------------

def exact_duplicates(keys: list[str]) -> dict[int, int]:
    """Position of each repeated key -> position of its first occurrence."""
    first: dict[str, int] = {}
    repeats = {}
    for position, key in enumerate(keys):
        if key in first:
            repeats[position] = first[key]
        else:
            first[key] = position
    return repeats


@dataclass(frozen=True)
class Removal:
    """Row `index` (position in the table given to clean_table) was removed for `problem`."""

    index: int
    problem: Problem


def _content(row: dict) -> tuple:
    """What normalisation may change, independent of how the messages JSON is spelled."""
    return tuple(row[f] for f in TEXT_FIELDS) + tuple(contents(row["messages"]))


@dataclass(frozen=True)
class CleanResult:
    kept: pd.DataFrame  # normalised rows, in input order
    removals: list[Removal]
    normalised: int  # rows that normalisation changed


def clean_table(frame: pd.DataFrame, filters: Filters, seed: int = 0) -> CleanResult:
    """Normalise, filter, then drop exact and near duplicates of earlier kept rows."""
    settings = filters.settings
    originals = frame.to_dict("records")
    rows = [normalize_row(row, settings.punctuation_width) for row in originals]
    removals: list[Removal] = []
    survivors: list[int] = []
    for index, row in enumerate(rows):
        problem = filters.problem(row)
        if problem:
            removals.append(Removal(index, problem))
        else:
            survivors.append(index)

    keys = [dedup_key(example_text(rows[i])) for i in survivors]
    repeats = exact_duplicates(keys)
    for position, first in repeats.items():
        removals.append(Removal(survivors[position], Problem(
            "", "exact_duplicate", f"same normalised text as id {rows[survivors[first]]['id']!r}")))
    unique = [p for p in range(len(survivors)) if p not in repeats]

    matches = near_duplicates([keys[p] for p in unique], settings.near_dup_threshold, settings.num_perm,
                              settings.shingle_size, seed)
    for match in matches:
        index, of = survivors[unique[match.index]], survivors[unique[match.of]]
        removals.append(Removal(index, Problem(
            "", "near_duplicate",
            f"Jaccard {match.similarity:.2f} >= {settings.near_dup_threshold} with id {rows[of]['id']!r}")))

    removed = {r.index for r in removals}
    kept = pd.DataFrame([rows[i] for i in range(len(rows)) if i not in removed], columns=list(frame.columns))
    changed = sum(_content(row) != _content(original) for row, original in zip(rows, originals, strict=True))
    return CleanResult(kept, sorted(removals, key=lambda r: r.index), changed)
