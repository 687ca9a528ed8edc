"""Stage `build`: instruction rows from human-written seeds and templated datasets.

Every record read ends up either in `instructions.parquet` (canonical, validated rows) or in
`rejected.parquet` with its file, row, field, rule and reason: rows read = kept + rejected.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd

from alignflow.data.instructions import TemplateSet, demo_family_rows, seed_rows, templated_rows
from alignflow.data.loaders import read_records
from alignflow.data.tables import (
    check_rejected_fraction,
    instruction_frame,
    rejects,
    validate_instructions,
    write_table,
)
from alignflow.pipeline.caching import sha256_file
from alignflow.pipeline.stage import InstructionData, StageOutput, StageRun, stage
from alignflow.schemas.config import PipelineConfig
from alignflow.schemas.stages.build import BuildConfig
from alignflow.tracking.runs import log_table_input


def file_digest(location: str) -> str:
    """Content digest of a local file; hub dataset names stand for themselves."""
    path = Path(location)
    return sha256_file(path) if path.is_file() else f"name:{location}"


def build_key(build: BuildConfig, config: PipelineConfig) -> dict:
    """The section, and the content of every seed, dataset and template file it names."""
    files = [*build.seeds, *(d.path for d in build.datasets), *(d.templates for d in build.datasets)]
    return {"seed": config.seed, **build.model_dump(mode="json"), "files": {f: file_digest(f) for f in files}}


def collect_rows(settings: BuildConfig, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(valid rows, rejects, number of records read) over every configured source."""
    rows: list[dict] = []
    origins: list[tuple[str, int]] = []
    rejected: list[dict] = []
    n_read = 0

    for path in settings.seeds:
        records, unreadable = read_records(path)
        converted, refused = seed_rows(records, path, settings.max_chars)
        n_read += len(records) + len(unreadable)
        rejected += unreadable + refused
        _extend(rows, origins, converted, refused, records, path)
    for dataset in settings.datasets:
        templates = TemplateSet.from_yaml(Path(dataset.templates))
        records, unreadable = read_records(dataset.path, dataset.split)
        records = records[: dataset.limit] if dataset.limit else records
        converted, refused = templated_rows(records, templates, dataset.path, seed, settings.max_chars)
        n_read += len(records) + len(unreadable)
        rejected += unreadable + refused
        _extend(rows, origins, converted, refused, records, dataset.path)
    if settings.demo_families is not None:
        demo = settings.demo_families
        generated = demo_family_rows(demo.families, demo.per_family, demo.language, demo.heldout_percent, seed,
                                     demo.instructions,
                                     {name: (v.family, v.instruction) for name, v in demo.variants.items()})
        n_read += len(generated)
        rows.extend(generated)
        origins.extend(("demo_families", n) for n in range(1, len(generated) + 1))
    frame = instruction_frame(rows)
    valid, invalid = validate_instructions(
        frame, stage="build", source="build",
        row_numbers=pd.Series([n for _, n in origins], dtype="int64"),
        sources=pd.Series([s for s, _ in origins], dtype="str"),
    )
    return valid, pd.concat([rejects(rejected), invalid], ignore_index=True), n_read


def _extend(rows: list[dict], origins: list[tuple[str, int]], converted: list[dict], refused: list[dict],
            records: list, source: str) -> None:
    """Append converted rows with the row number each came from (records minus refused, in order)."""
    refused_rows = {r["row"] for r in refused}
    numbers = [number for number, _ in records if number not in refused_rows]
    rows.extend(converted)
    origins.extend((source, number) for number in numbers)


@stage("build", result=InstructionData, key=build_key)
def build(cfg: BuildConfig, run: StageRun) -> StageOutput:
    """Instruction rows from human-written seeds and templated datasets."""
    settings = cfg
    valid, rejected, n_read = collect_rows(settings, run.config.seed)
    out = run.out_dir
    write_table(rejected, out / "rejected.parquet")
    check_rejected_fraction(n_read, rejected, settings.max_rejected_fraction, "build")
    write_table(valid, out / "instructions.parquet")
    assert n_read == len(valid) + len(rejected), "every record read is kept or rejected"
    log_table_input(valid, out / "instructions.parquet", "instructions-built", context="build")
    mlflow.log_artifact(str(out / "rejected.parquet"), artifact_path="data")
    metrics = {"rows_read": n_read, "rows_kept": len(valid), "rows_rejected": len(rejected)}
    for rule, count in rejected["rule"].value_counts().items():
        metrics[f"rejected_{rule}"] = int(count)
    for source, count in valid["source"].str.split(":").str[0].value_counts().items():
        metrics[f"rows_from_{source}"] = int(count)
    print(f"[build] {n_read} rows read: {len(valid)} kept, {len(rejected)} rejected", flush=True)
    return StageOutput(outputs={"instructions": str(out / "instructions.parquet"),
                                "rejected": str(out / "rejected.parquet")}, metrics=metrics)
