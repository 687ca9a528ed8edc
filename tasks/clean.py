"""Stage `clean`: normalise, filter and deduplicate the instruction rows of build (and self_instruct).

Every row read ends up either in `instructions.parquet` (normalised rows that passed every rule)
or in `rejected.parquet` with its source file, row number, field, rule and reason:
rows read = rows kept + rows rejected. Inputs and output are validated against InstructionRow.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from alignflow.data.cleaning import RULES, CleanResult, Filters, clean_table, load_blocklist_terms
from alignflow.data.tables import (
    check_rejected_fraction,
    empty_rejects,
    instruction_frame,
    read_table,
    record_json,
    rejects,
    validate_instructions,
    validated,
    write_table,
)
from alignflow.pipeline.caching import sha256_file
from alignflow.pipeline.stage import InstructionData, StageOutput, StageResult, StageRun, stage
from alignflow.schemas.config import PipelineConfig
from alignflow.schemas.instruction import RejectedRow
from alignflow.schemas.stages.clean import CleanConfig
from alignflow.tracking.runs import log_table_input

# (upstream stage, its output holding instruction rows), in priority order: on duplicates the
# earlier source's row is kept, so human-written and templated rows win over generated ones.
INPUTS = (("build", "instructions"), ("self_instruct", "generated"))
BOUNDARY_RULES = ("schema", "duplicate_id")  # rules of validate_instructions


def clean_key(settings: CleanConfig, config: PipelineConfig) -> dict:
    """The section, and the content of its blocklist file."""
    path = Path(settings.blocklist_path) if settings.blocklist_path else None
    blocklist_digest = sha256_file(path) if path and path.is_file() else None
    return {"seed": config.seed, **settings.model_dump(mode="json"), "blocklist_sha256": blocklist_digest}


def blocklist_terms(settings: CleanConfig) -> list[str]:
    """The configured file's terms plus blocklist_extra; a configured file that is missing is an error."""
    terms = list(settings.blocklist_extra)
    if settings.blocklist_path:
        path = Path(settings.blocklist_path)
        if not path.is_file():
            raise FileNotFoundError(f"clean.blocklist_path {path} does not exist (relative paths are read from "
                                    f"{Path.cwd()}); set it to null to use only blocklist_extra")
        terms += load_blocklist_terms(path)
    return terms


@dataclass
class Rows:
    """Valid rows of all inputs with where each came from, and what was rejected on the way in."""

    frame: pd.DataFrame
    origins: list[tuple[str, int]]  # (source file, 1-based row) of each row of `frame`
    tables: dict[str, pd.DataFrame]  # each source file's table as read, for the original records
    rejected: list[pd.DataFrame]
    read: dict[str, int]  # rows read per upstream stage

    def reject(self, index: int, field: str, rule: str, reason: str) -> dict:
        """A RejectedRow for row `index` of `frame`, located in and copied from its source file."""
        source, number = self.origins[index]
        return {"stage": "clean", "source": source, "row": number, "id": str(self.frame.at[index, "id"]),
                "field": field, "rule": rule, "reason": reason,
                "record": record_json(self.tables[source].iloc[number - 1])}


def read_inputs(upstream: dict[str, StageResult]) -> Rows:
    """Read and validate each upstream table; ids must be unique across them too."""
    rows = Rows(instruction_frame([]), [], {}, [], {})
    frames = []
    for producer, output in INPUTS:
        if producer not in upstream:
            continue
        path = upstream[producer].outputs[output]
        raw = read_table(path)
        rows.read[producer], rows.tables[str(path)] = len(raw), raw
        log_table_input(raw, Path(path), f"{producer}.{output}", context="input")
        if raw.empty:
            continue
        valid, invalid = validate_instructions(raw, stage="clean", source=str(path))
        rows.rejected.append(invalid)
        first_row: dict = {}
        for number, row_id in enumerate(raw["id"], start=1):
            first_row.setdefault(row_id, number)
        frames.append(valid)
        rows.origins += [(str(path), first_row[row_id]) for row_id in valid["id"]]
    if frames:
        rows.frame = pd.concat(frames, ignore_index=True)
    return _drop_ids_seen_in_earlier_inputs(rows)


def _drop_ids_seen_in_earlier_inputs(rows: Rows) -> Rows:
    repeated = rows.frame["id"].duplicated(keep="first")
    if not repeated.any():
        return rows
    first_source = {row_id: rows.origins[i][0] for i, row_id in reversed(list(enumerate(rows.frame["id"])))}
    rows.rejected.append(rejects(
        rows.reject(i, "id", "duplicate_id",
                    f"id {rows.frame.at[i, 'id']!r} already used in {first_source[rows.frame.at[i, 'id']]}")
        for i in rows.frame.index[repeated]
    ))
    keep = ~repeated.to_numpy()
    return Rows(rows.frame[keep].reset_index(drop=True), [o for o, k in zip(rows.origins, keep, strict=True) if k],
                rows.tables, rows.rejected, rows.read)


def cleaning_rejects(rows: Rows, result: CleanResult) -> pd.DataFrame:
    return rejects(rows.reject(r.index, r.problem.field, r.problem.rule, r.problem.reason) for r in result.removals)


def validate_output(kept: pd.DataFrame, rows: Rows, out_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check the cleaned rows against InstructionRow again (normalisation may have emptied a field).

    Failures are reported against the row's original file and line, not the output table.
    """
    if kept.empty:
        return kept, empty_rejects()
    valid, invalid = validate_instructions(kept, stage="clean", source=str(out_path))
    index_of = {row_id: index for index, row_id in enumerate(rows.frame["id"])}
    return valid, rejects(rows.reject(index_of[r.id], r.field, r.rule, f"after normalisation: {r.reason}")
                          for r in invalid.itertuples())


def in_input_order(rejected: pd.DataFrame, rows: Rows) -> pd.DataFrame:
    """Rejects sorted as the rows were read (file by file, row by row), which is how people look for them."""
    files = {source: k for k, source in enumerate(dict.fromkeys([*rows.tables, *rejected["source"]]))}
    rejected = rejected.assign(row=rejected["row"].astype("int64"))
    order = sorted(range(len(rejected)), key=lambda k: (files[rejected["source"].iat[k]], rejected["row"].iat[k]))
    return rejected.iloc[order].reset_index(drop=True)


def rule_metrics(rejected: pd.DataFrame) -> dict[str, float]:
    """Rejected rows per rule, with a zero for every known rule so runs compare column by column."""
    counts = Counter(rejected["rule"])
    return {f"rejected_{rule}": float(counts.get(rule, 0)) for rule in (*BOUNDARY_RULES, *RULES, *counts)}


@stage("clean", result=InstructionData, key=clean_key)
def clean(cfg: CleanConfig, build: InstructionData, self_instruct: InstructionData | None = None, *,
          run: StageRun) -> StageOutput:
    """Normalise, filter and deduplicate instruction rows; rejected rows say why."""
    settings = cfg
    filters = Filters.from_config(settings, blocklist_terms(settings))
    rows = read_inputs(run.upstream)
    n_read = sum(rows.read.values())
    result = clean_table(rows.frame, filters, seed=run.config.seed)
    out_path, rejected_path = run.out_dir / "instructions.parquet", run.out_dir / "rejected.parquet"
    kept, invalid = validate_output(result.kept, rows, out_path)
    rejected = in_input_order(pd.concat([*rows.rejected, cleaning_rejects(rows, result), invalid]), rows)
    validated(RejectedRow, rejected, "clean: rejected rows")
    if n_read != len(kept) + len(rejected):
        raise RuntimeError(f"clean lost rows: read {n_read}, kept {len(kept)}, rejected {len(rejected)}")

    write_table(kept, out_path)
    write_table(rejected, rejected_path)
    log_table_input(kept, out_path, "clean.instructions", context="output")
    log_table_input(rejected, rejected_path, "clean.rejected", context="output")
    metrics = {
        "rows_read": float(n_read), "rows_kept": float(len(kept)), "rows_rejected": float(len(rejected)),
        "rejected_fraction": len(rejected) / n_read if n_read else 0.0,
        "rows_normalised": float(result.normalised),
        **{f"rows_read_{stage}": float(n) for stage, n in rows.read.items()},
        **rule_metrics(rejected),
    }
    report = {"rows": {k: v for k, v in metrics.items() if k.startswith("rows")},
              "rejected_by_rule": {k.removeprefix("rejected_"): int(v) for k, v in rule_metrics(rejected).items()},
              "sha256": {p.name: sha256_file(p) for p in (out_path, rejected_path)}}
    (run.out_dir / "clean_report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    mlflow.log_dict(report, "clean_report.json")
    mlflow.log_artifact(str(rejected_path), artifact_path="data")
    check_rejected_fraction(n_read, rejected, settings.max_rejected_fraction, "clean")
    summary = {"rows_read": n_read, "rows_kept": len(kept), "rejected_by_rule": report["rejected_by_rule"]}
    return StageOutput(outputs={"instructions": str(out_path), "rejected": str(rejected_path)}, metrics=metrics,
                       summary=summary)
