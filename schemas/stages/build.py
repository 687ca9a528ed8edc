"""The build stage's section (tasks/build.py): human-written seeds, templated datasets, demo families."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alignflow.schemas.trainer import Section


class TemplatedDatasetConfig(Section):
    path: str = Field(..., description="A .jsonl/.csv/.parquet file, or a `datasets.load_dataset` name or folder.")
    templates: str = Field(..., description="YAML file with task, columns, templates and verbalizers.")
    split: str = Field("train", description="Split to read when `path` goes through datasets.load_dataset.")
    limit: int | None = Field(None, ge=1, description="Convert at most this many rows (first ones).")


class DemoVariantConfig(Section):
    """A demo task family asked with another instruction, as a task of its own."""

    family: str = Field(..., description="The demo task family whose items (train inputs) the rows use.")
    instruction: str = Field(..., min_length=1, description="The instruction every row of this task carries.")


class DemoInstructionsConfig(Section):
    """Instruction rows written from the demo corpus's task families (train inputs only)."""

    families: list[str] | None = Field(None, description="Demo task families to use; None: every family.")
    per_family: int = Field(40, ge=1, description="Rows per family (at most the family's train items).")
    language: Literal["zh", "en"] = Field("zh", description="Language of the instruction (the family description).")
    instructions: dict[str, str] = Field(
        {}, description="Instruction per family, replacing its corpus description: paraphrases the base model never "
        "saw, so following them is what SFT must teach."
    )
    variants: dict[str, DemoVariantConfig] = Field(
        {}, description="More tasks: name -> a family asked with another instruction (e.g. one SFT does not train "
        "on, left for preference optimisation to teach)."
    )
    heldout_percent: int = Field(
        20, ge=0, le=90, description="Must equal pretrain.corpus.heldout_percent: held-out inputs never become rows."
    )


class BuildConfig(Section):
    """Collects instruction rows from human-written seeds and templated datasets."""

    seeds: list[str] = Field(
        ["data/seed/instructions.jsonl"],
        description="Files of human-written rows: basic (task/instruction/input/output) or dialogue (messages).",
    )
    datasets: list[TemplatedDatasetConfig] = Field([], description="Existing datasets converted through templates.")
    demo_families: DemoInstructionsConfig | None = Field(
        None, description="Demo only: instruction rows from the demo task families, so SFT can be checked on "
        "their held-out inputs."
    )
    max_chars: int = Field(20000, ge=1, description="Reject a row whose any field is longer than this.")
    max_rejected_fraction: float = Field(
        0.2, ge=0, le=1, description="Fail the stage if more than this fraction of rows read is rejected."
    )
