"""Evaluation tasks as data: the task YAML schema and the items it refers to.

A task file declares the prompt template (the notes' `任务：/输入：/输出：` format or its English
variant, or an explicit template), where its test items and its few-shot pool come from, the
output type (multiple choice scored by log-likelihood, or generation scored by exact match,
contains or ROUGE-L), verbalisers and delimiters. Example:

```yaml
name: recognize_word
category: recognition          # recognition: the task can only be read from the demonstrations
language: zh
test: {demo_kind: word, split: heldout}
fewshot: {demo_kind: word, split: train, same_group: true}
output_type: multiple_choice
choices: siblings              # what every task of this input kind answers for this input
```

Items come from the demo corpus by reference (`demo_kind` / `demo_family` + `split`) or from a
JSONL file (`path`, one object per line with `input`, `output`, optional `choices` and `group`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alignflow.data.families import FIELD_LABELS, build_families, split_items
from alignflow.errors import DataError


class TaskSpecError(DataError):
    """A task file could not be read, did not validate, or refers to items that do not exist."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ItemSource(_Spec):
    """Where items come from: the demo corpus by reference, or a JSONL file."""

    demo_kind: str | None = Field(
        None, description="Every demo task family of this input kind (word, numbers, sentence_zh, sentence_en)."
    )
    demo_family: str | None = Field(None, description="One demo task family (translate, add, sentiment_en, ...).")
    split: Literal["train", "heldout", "all"] = Field(
        "heldout", description="Demo items: those seen in pretraining (train), held out of it, or all."
    )
    path: str | None = Field(
        None, description="JSONL file, one item per line: input, output, optional choices and group. "
        "Relative paths are relative to the task file."
    )
    limit: int | None = Field(None, ge=1, description="Keep at most this many items (the first ones).")
    same_group: bool = Field(
        False, description="Few-shot pool only: draw a document's demonstrations from items of its own group "
        "(for demo sources, its task family)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ItemSource:
        given = [name for name in ("demo_kind", "demo_family", "path") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of demo_kind, demo_family, path (got {given or 'none'})")
        return self


class TaskSpec(_Spec):
    """One evaluation task (see the module docstring for an example)."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Task name (metrics, tables).")
    category: Literal["recognition", "learning", "instruction", "preference", "other"] = Field(
        "other", description="recognition: a known task to be recognised from demonstrations; learning: a new "
        "mapping or label words that can only be learned from them; instruction: a task stated as an "
        "instruction (what SFT teaches); preference: an instruction only preference optimisation teaches."
    )
    shots: list[int] | None = Field(
        None, description="Evaluate at these k instead of the stage's shots list (e.g. [0] for instructions)."
    )
    language: Literal["zh", "en"] = Field("zh", description="Field labels: zh 任务：/输入：/输出：, en Task:/Input:/Output:.")
    description: str | None = Field(
        None, description="Task line text (任务：<description>). Unset: no task line, the task must be inferred."
    )
    text_template: str | None = Field(
        None, description="Explicit document text with {input}. Unset: '<input label>{input}\\n<output label>'."
    )
    description_template: str = Field(
        "{task_label}{description}\n\n", description="How the task line is written ({task_label}, {description})."
    )
    target_delimiter: str | None = Field(
        None, description="Between a document's text and its answer. Unset: '' for zh, ' ' for en."
    )
    fewshot_delimiter: str = Field("\n\n", description="After each demonstration's answer.")
    test: ItemSource = Field(..., description="The documents scored.")
    fewshot: ItemSource = Field(..., description="The pool demonstrations are drawn from.")
    output_type: Literal["multiple_choice", "generate"] = Field(
        "multiple_choice", description="multiple_choice: log-likelihood of each choice; generate: greedy text."
    )
    choices: list[str] | Literal["siblings", "item"] | None = Field(
        None, description="multiple_choice: a fixed list (before verbalising), 'siblings' (outputs of every demo "
        "family of the input's kind for this input) or 'item' (each item's own choices field)."
    )
    verbalizer: dict[str, str] = Field(
        {}, description="Output value -> the word written in demonstrations and choices (new label words, "
        "flipped labels). Values not listed stay as they are."
    )
    metric: Literal["exact_match", "contains", "rouge_l"] = Field(
        "exact_match", description="generate: how a generation is compared with the target."
    )
    until: list[str] = Field(["\n"], description="generate: stop at the first of these strings.")
    max_new_tokens: int = Field(16, ge=1, description="generate: most tokens generated.")

    @model_validator(mode="after")
    def _choices_match_output_type(self) -> TaskSpec:
        if self.output_type == "multiple_choice" and self.choices is None:
            raise ValueError("multiple_choice tasks need choices: a list, 'siblings' or 'item'")
        if self.choices == "siblings" and self.test.path:
            raise ValueError("choices: siblings needs a demo source (demo_kind or demo_family)")
        return self

    @property
    def target_delim(self) -> str:
        if self.target_delimiter is not None:
            return self.target_delimiter
        return "" if self.language == "zh" else " "

    @property
    def text_format(self) -> str:
        if self.text_template is not None:
            return self.text_template
        labels = FIELD_LABELS[self.language]
        return f"{labels['input']}{{input}}\n{labels['output'].rstrip(' ')}"

    def verbalize(self, value: str) -> str:
        return self.verbalizer.get(value, value)


@dataclass(frozen=True)
class EvalDoc:
    """One item: `target` and `choices` are verbalised; `label` is the raw output (for balancing)."""

    id: str
    input: str
    target: str
    label: str
    group: str = ""
    choices: tuple[str, ...] | None = None


def load_task(path: str | Path) -> TaskSpec:
    """Read and validate a task YAML file; relative JSONL paths are resolved against its folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise TaskSpecError(f"{path}: cannot read task file: {error}") from None
    if not isinstance(data, dict):
        raise TaskSpecError(f"{path}: a task file must be a mapping")
    for key in ("test", "fewshot"):
        source = data.get(key)
        if isinstance(source, dict) and source.get("path") and not Path(source["path"]).is_absolute():
            data[key] = {**source, "path": str((path.parent / source["path"]).resolve())}
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in error.errors())
        raise TaskSpecError(f"{path}: {problems}") from None


@lru_cache(maxsize=1)
def _catalogue() -> dict:
    return build_families()


@lru_cache(maxsize=1)
def _answers_by_kind_and_input() -> dict[tuple[str, str], list[str]]:
    answers: dict[tuple[str, str], list[str]] = {}
    for family in _catalogue().values():
        for item in family.items:
            answers.setdefault((family.kind, item.input), []).append(item.output)
    return answers


def _demo_families(source: ItemSource) -> list:
    catalogue = _catalogue()
    if source.demo_family:
        if source.demo_family not in catalogue:
            raise TaskSpecError(f"unknown demo_family {source.demo_family!r}; known: {sorted(catalogue)}")
        return [catalogue[source.demo_family]]
    families = [f for f in catalogue.values() if f.kind == source.demo_kind]
    if not families:
        kinds = sorted({f.kind for f in catalogue.values()})
        raise TaskSpecError(f"unknown demo_kind {source.demo_kind!r}; known: {kinds}")
    return families


def sibling_outputs(family_name: str, text: str) -> list[str]:
    """What every demo family of `family_name`'s input kind answers for input `text`."""
    return list(_answers_by_kind_and_input().get((_catalogue()[family_name].kind, text), []))


def _demo_items(spec: TaskSpec, source: ItemSource, heldout_percent: int, *, for_test: bool) -> list[EvalDoc]:
    docs: list[EvalDoc] = []
    for family in _demo_families(source):
        train, heldout = split_items(family, heldout_percent)
        items = {"train": train, "heldout": heldout, "all": list(family.items)}[source.split]
        for item in items:
            choices = None
            if spec.choices == "siblings" and for_test:
                others = sibling_outputs(family.name, item.input)
                if others.count(item.output) > 1:
                    continue  # ambiguous: another task gives the same answer for this input
                choices = tuple(spec.verbalize(c) for c in sorted(set(others)))
            docs.append(EvalDoc(id=f"{family.name}:{item.input}", input=item.input,
                                target=spec.verbalize(item.output), label=item.output, group=family.name,
                                choices=choices))
    return docs


def _jsonl_items(spec: TaskSpec, source: ItemSource) -> list[EvalDoc]:
    path = Path(source.path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise TaskSpecError(f"{spec.name}: cannot read {path}: {error}") from None
    docs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text, output = str(row["input"]), str(row["output"])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise TaskSpecError(f"{path}:{number}: need a JSON object with input and output ({error})") from None
        choices = row.get("choices")
        docs.append(EvalDoc(id=str(row.get("id", f"{path.stem}:{number}")), input=text,
                            target=spec.verbalize(output), label=output, group=str(row.get("group", "")),
                            choices=tuple(spec.verbalize(str(c)) for c in choices) if choices else None))
    return docs


def load_items(spec: TaskSpec, source: ItemSource, *, heldout_percent: int = 20,
               for_test: bool = True) -> list[EvalDoc]:
    """The items `source` refers to, verbalised, with choices attached to test documents.

    `heldout_percent` must be the one the demo base model was pretrained with, so that
    `split: heldout` means inputs the model never saw.
    """
    if source.path:
        docs = _jsonl_items(spec, source)
    else:
        docs = _demo_items(spec, source, heldout_percent, for_test=for_test)
    if for_test and spec.output_type == "multiple_choice":
        docs = [_attach_choices(spec, doc) for doc in docs]
    if for_test and not source.path:
        docs = mixed_order(docs)  # families interleaved, so a limit keeps every family
    return docs[: source.limit] if source.limit else docs


def mixed_order(docs: list[EvalDoc]) -> list[EvalDoc]:
    """A fixed pseudo-random order (by a hash of each id): the same on every machine and run."""
    return sorted(docs, key=lambda doc: hashlib.sha256(doc.id.encode("utf-8")).hexdigest())


def _attach_choices(spec: TaskSpec, doc: EvalDoc) -> EvalDoc:
    if isinstance(spec.choices, list):
        choices = tuple(spec.verbalize(c) for c in spec.choices)
    else:
        choices = doc.choices
    if not choices:
        raise TaskSpecError(f"{spec.name}: document {doc.id} has no choices")
    if doc.target not in choices:
        raise TaskSpecError(f"{spec.name}: document {doc.id}: target {doc.target!r} is not among {list(choices)}")
    return EvalDoc(doc.id, doc.input, doc.target, doc.label, doc.group, choices)


def task_files_digest_inputs(spec_path: Path, spec: TaskSpec) -> list[Path]:
    """Files whose content determines a task's results: the YAML and any JSONL it reads."""
    return [spec_path] + [Path(s.path) for s in (spec.test, spec.fewshot) if s.path]
