"""Turn loaded records into canonical instruction rows (schemas/instruction.py).

Three sources, as in the notes: human-written seeds (already in instruction or dialogue form),
existing datasets converted through FLAN-style templates, and model-generated rows
(self_instruct). Each conversion returns (rows, rejects) and never drops a record silently.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from pathlib import Path

import yaml

from alignflow.data.loaders import Record
from alignflow.errors import DataError
from alignflow.schemas.instruction import FORMATS

# `source` is the user's own provenance label (e.g. the name of the set a row came from); rows keep
# it as `seed:<label>`, and rows without one are `seed:<file>`.
SEED_FIELDS = {"id", "task", "format", "instruction", "input", "output", "messages", "source"}


def basic_messages(instruction: str, input_text: str, output: str) -> list[dict]:
    """The chat form of a basic (指令/输入/输出) example: one user turn, one assistant turn."""
    user = f"{instruction}\n{input_text}" if input_text else instruction
    return [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def canonical_row(*, id: str, task: str, format: str, instruction: str, input: str, output: str,
                  messages: list[dict], source: str) -> dict:
    return {"id": id, "task": task, "format": format, "instruction": instruction, "input": input,
            "output": output, "messages": json.dumps(messages, ensure_ascii=False), "source": source}


def _reject(source: str, row: int, rule: str, reason: str, record: dict, field: str = "", id: str = "") -> dict:
    return {"stage": "build", "source": source, "row": row, "id": id, "field": field, "rule": rule,
            "reason": reason, "record": json.dumps(record, ensure_ascii=False, default=str)}


def _too_long(record: dict, max_chars: int) -> str | None:
    for key, value in record.items():
        size = len(value) if isinstance(value, str) else len(json.dumps(value, ensure_ascii=False, default=str))
        if size > max_chars:
            return key
    return None


def seed_rows(records: list[Record], source: str, max_chars: int) -> tuple[list[dict], list[dict]]:
    """Human-written seeds: basic rows (instruction/input/output) or dialogues (messages)."""
    rows, rejects = [], []
    stem = Path(source).stem
    for number, record in records:
        problem = _seed_problem(record, max_chars)
        row_id = str(record.get("id") or f"{stem}-{number}")
        if problem:
            rule, field, reason = problem
            rejects.append(_reject(source, number, rule, f"row {number}: {reason}", record, field, row_id))
            continue
        origin = f"seed:{record.get('source') or source}"
        fmt = record.get("format", "basic")
        if fmt == "basic":
            messages = basic_messages(record["instruction"], record.get("input", ""), record["output"])
            rows.append(canonical_row(id=row_id, task=record["task"], format=fmt, instruction=record["instruction"],
                                      input=record.get("input", ""), output=record["output"], messages=messages,
                                      source=origin))
        else:
            messages = record["messages"]
            first_user = next((m["content"] for m in messages if m.get("role") == "user"), "")
            rows.append(canonical_row(id=row_id, task=record["task"], format=fmt, instruction=first_user, input="",
                                      output=messages[-1]["content"], messages=messages, source=origin))
    return rows, rejects


def _seed_problem(record: dict, max_chars: int) -> tuple[str, str, str] | None:
    """(rule, field, reason) when a seed record cannot become a row; None when it can."""
    unexpected = sorted(set(record) - SEED_FIELDS)
    if unexpected:
        return "unexpected_field", unexpected[0], f"unexpected field(s) {unexpected}; allowed: {sorted(SEED_FIELDS)}"
    fmt = record.get("format", "basic")
    if fmt not in FORMATS:
        return "unknown_format", "format", f"format {fmt!r} is not one of {list(FORMATS)}"
    required = ["task", "instruction", "output"] if fmt == "basic" else ["task", "messages"]
    for field in required:
        if field not in record or record[field] is None:
            return "missing_field", field, f"missing required field {field!r} for format {fmt!r}"
    for field in ("id", "task", "format", "instruction", "input", "output", "source"):
        if field in record and not isinstance(record[field], str):
            return "wrong_type", field, f"{field} must be text, got {type(record[field]).__name__}"
    if fmt != "basic":
        messages = record["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages) or not messages:
            return "wrong_type", "messages", "messages must be a non-empty list of {role, content} objects"
        if not all(isinstance(m.get("content"), str) and isinstance(m.get("role"), str) for m in messages):
            return "wrong_type", "messages", "every message needs text role and content"
    long_field = _too_long(record, max_chars)
    if long_field:
        return "too_long", long_field, f"{long_field} is longer than {max_chars} characters"
    return None


@dataclass(frozen=True)
class TemplateSet:
    """FLAN-style conversion of one dataset: several phrasings, column placeholders, verbalisers."""

    task: str
    columns: tuple[str, ...]
    templates: tuple[dict, ...]
    verbalizers: dict[str, dict[str, str]]

    @classmethod
    def from_yaml(cls, path: Path) -> TemplateSet:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        allowed = {"task", "columns", "templates", "verbalizers"}
        if not isinstance(data, dict) or set(data) - allowed or not {"task", "columns", "templates"} <= set(data):
            raise DataError(f"{path}: a template file needs task, columns, templates (and optional verbalizers)")
        templates = tuple(data["templates"])
        if not templates:
            raise DataError(f"{path}: templates is empty")
        for number, template in enumerate(templates, start=1):
            if not isinstance(template, dict) or set(template) - {"instruction", "input", "output"} or \
                    not {"instruction", "output"} <= set(template):
                raise DataError(f"{path}: template {number} needs instruction and output (and optional input)")
            for text in template.values():
                for _, name, _, _ in string.Formatter().parse(text):
                    if name and name not in data["columns"]:
                        raise DataError(f"{path}: template {number} uses {{{name}}}, not in columns {data['columns']}")
        verbalizers = {col: {str(k): str(v) for k, v in mapping.items()}
                       for col, mapping in (data.get("verbalizers") or {}).items()}
        return cls(data["task"], tuple(data["columns"]), templates, verbalizers)


def templated_rows(records: list[Record], templates: TemplateSet, source: str, seed: int,
                   max_chars: int) -> tuple[list[dict], list[dict]]:
    """Convert dataset records with a template chosen per row (seeded), verbalising label columns."""
    rows, rejects = [], []
    for number, record in records:
        row_id = f"{templates.task}-{Path(source).stem}-{number}"
        values, problem = {}, None
        for column in templates.columns:
            value = record.get(column)
            if value is None or (isinstance(value, str) and not value.strip()):
                problem = ("missing_field", column, f"row {number}: column {column!r} is missing or empty")
                break
            value = str(value)
            mapping = templates.verbalizers.get(column)
            if mapping is not None:
                if value not in mapping:
                    problem = ("unknown_label", column,
                               f"row {number}: {column}={value!r} has no verbaliser (known: {sorted(mapping)})")
                    break
                value = mapping[value]
            values[column] = value
        if problem is None and (long_field := _too_long(values, max_chars)):
            problem = ("too_long", long_field, f"row {number}: {long_field} is longer than {max_chars} characters")
        if problem:
            rejects.append(_reject(source, number, problem[0], problem[2], record, problem[1], row_id))
            continue
        template = random.Random(f"{seed}:{source}:{number}").choice(templates.templates)
        instruction = template["instruction"].format(**values)
        input_text = template.get("input", "").format(**values)
        output = template["output"].format(**values)
        rows.append(canonical_row(id=row_id, task=templates.task, format="basic", instruction=instruction,
                                  input=input_text, output=output,
                                  messages=basic_messages(instruction, input_text, output),
                                  source=f"template:{source}"))
    return rows, rejects


def demo_family_rows(families: list[str] | None, per_family: int, language: str, heldout_percent: int,
                     seed: int, instructions: dict[str, str] | None = None,
                     variants: dict[str, tuple[str, str]] | None = None) -> list[dict]:
    """Basic rows from the demo task families: instruction = the family's description (or the given
    paraphrase), train inputs only; `variants` adds tasks name -> (family, instruction).

    The demo's checks ask whether tuning teaches the model to follow these instructions on inputs
    it never saw (the held-out split), so held-out inputs must never become rows.
    """
    import random

    from alignflow.data.families import build_families, split_items

    catalogue = build_families()
    names = families or sorted(catalogue)
    variants = variants or {}
    unknown = sorted((set(names) | set(instructions or {}) | {f for f, _ in variants.values()}) - set(catalogue))
    if unknown:
        raise ValueError(f"build.demo_families: unknown task families {unknown}; known: {sorted(catalogue)}")
    tasks = [(name, name, (instructions or {}).get(name, catalogue[name].description[language])) for name in names]
    tasks += [(task, family, instruction) for task, (family, instruction) in sorted(variants.items())]
    rng = random.Random(seed)
    rows = []
    for task, family_name, instruction in tasks:
        train, _ = split_items(catalogue[family_name], heldout_percent)
        for i, item in enumerate(rng.sample(train, min(per_family, len(train)))):
            rows.append(canonical_row(id=f"demo-{task}-{i:03d}", task=task, format="basic", instruction=instruction,
                                      input=item.input, output=item.output,
                                      messages=basic_messages(instruction, item.input, item.output),
                                      source=f"demo:{task}"))
    return rows
