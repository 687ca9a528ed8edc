"""Stage `validate`: the instruction data's last gate before training.

Reads the newest instruction table of the data flow (clean's, else build's plus self_instruct's),
validates it, gathers every upstream stage's rejects, enforces the rejection budget, writes the
data card (counts per task, source, format and rejection rule, as tables and a bar chart) and
splits train/validation per task.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import mlflow
import pandas as pd

from alignflow.data.tables import (
    check_rejected_fraction,
    read_table,
    validate_instructions,
    write_table,
)
from alignflow.errors import DataError
from alignflow.pipeline.stage import InstructionData, StageOutput, StageResult, StageRun, stage
from alignflow.schemas.stages.validate import ValidateConfig
from alignflow.tracking.plots import count_panels
from alignflow.tracking.runs import log_table_input

DATA_STAGES = ("build", "self_instruct", "clean")


def latest_instructions(upstream: dict[str, StageResult]) -> list[tuple[str, Path]]:
    """The table(s) holding the data flow's current rows, as (stage, path)."""
    if "clean" in upstream:
        return [("clean", Path(upstream["clean"].outputs["instructions"]))]
    tables = [("build", Path(upstream["build"].outputs["instructions"]))]
    if "self_instruct" in upstream:
        tables.append(("self_instruct", Path(upstream["self_instruct"].outputs["generated"])))
    return tables


def split_by_task(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out `fraction` of each task's rows (at least one when a task has two or more)."""
    held: list[int] = []
    for task_name, group in frame.groupby("task", sort=True):
        indices = sorted(group.index)
        n_held = round(len(indices) * fraction)
        if fraction > 0 and n_held == 0 and len(indices) >= 2:
            n_held = 1
        held += random.Random(f"{seed}:{task_name}").sample(indices, n_held)
    validation = frame.loc[sorted(held)]
    return frame.drop(index=held).reset_index(drop=True), validation.reset_index(drop=True)


def data_card(valid: pd.DataFrame, rejected: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Counts per task, source kind, format and rejection rule."""
    return {
        "task": valid["task"].value_counts().sort_index().to_dict(),
        "source": valid["source"].str.split(":").str[0].value_counts().sort_index().to_dict(),
        "format": valid["format"].value_counts().sort_index().to_dict(),
        "rejection rule": rejected["rule"].value_counts().sort_index().to_dict() if len(rejected) else {},
    }


def card_markdown(card: dict[str, dict[str, int]], n_train: int, n_validation: int, n_rejected: int) -> str:
    lines = ["# Instruction data card", "", f"train rows: {n_train}  ", f"validation rows: {n_validation}  ",
             f"rejected rows: {n_rejected}", ""]
    for name, counts in card.items():
        lines += [f"## {name}", "", f"| {name} | rows |", "| --- | ---: |"]
        lines += [f"| {key} | {value} |" for key, value in counts.items()] or ["| (none) | 0 |"]
        lines.append("")
    return "\n".join(lines)


@stage("validate", result=InstructionData)
def validate_data(cfg: ValidateConfig, build: InstructionData, self_instruct: InstructionData | None = None,
                  clean: InstructionData | None = None, *, run: StageRun) -> StageOutput:
    """Validate instruction data; data card; train/validation split."""
    settings = cfg
    out = run.out_dir
    frames = [read_table(path) for _, path in latest_instructions(run.upstream)]
    combined = pd.concat(frames, ignore_index=True)
    valid, invalid = validate_instructions(combined, stage="validate", source="instructions")
    upstream_rejects = [read_table(result.outputs["rejected"])
                        for name, result in run.upstream.items()
                        if name in DATA_STAGES and "rejected" in result.outputs]
    rejected = pd.concat([*upstream_rejects, invalid], ignore_index=True)
    write_table(rejected, out / "rejected.parquet")
    check_rejected_fraction(len(valid) + len(rejected), rejected, settings.max_rejected_fraction, "validate")
    if len(valid) < settings.min_rows:
        raise DataError(f"validate: only {len(valid)} valid rows, fewer than min_rows={settings.min_rows}")

    train, validation = split_by_task(valid, settings.validation_fraction, run.config.seed)
    write_table(valid, out / "instructions.parquet")
    write_table(train, out / "train.parquet")
    write_table(validation, out / "validation.parquet")
    card = data_card(valid, rejected)
    (out / "data_card.json").write_text(json.dumps(card, ensure_ascii=False, indent=1), encoding="utf-8")
    (out / "data_card.md").write_text(card_markdown(card, len(train), len(validation), len(rejected)),
                                      encoding="utf-8")
    count_panels(out / "data_card.png", "instruction data", card)

    # logged as the stages after it read them back (same digest: MLflow links them as one dataset)
    log_table_input(read_table(out / "train.parquet"), out / "train.parquet", "instructions-train", context="train")
    log_table_input(read_table(out / "validation.parquet"), out / "validation.parquet", "instructions-validation",
                    context="validation")
    for name, counts in card.items():
        mlflow.log_table(pd.DataFrame({name: list(counts), "rows": list(counts.values())}),
                         artifact_file=f"data_card/{name.replace(' ', '_')}.json")
    for name in ("data_card.md", "data_card.png", "data_card.json", "rejected.parquet"):
        mlflow.log_artifact(str(out / name), artifact_path="data_card")
    metrics = {"rows_valid": len(valid), "rows_train": len(train), "rows_validation": len(validation),
               "rows_rejected_total": len(rejected), "tasks": valid["task"].nunique()}
    print(f"[validate] {len(train)} train / {len(validation)} validation rows, {len(rejected)} rejected "
          f"over the data flow; data card in {out / 'data_card.md'}", flush=True)
    return StageOutput(
        outputs={name: str(out / f"{name}.parquet") for name in ("instructions", "train", "validation", "rejected")},
        metrics=metrics,
        summary={"data_card": card},
    )
