"""Read, write and validate the tables stages exchange; turn validation failures into rejects."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from alignflow.errors import DataError
from alignflow.schemas.instruction import INSTRUCTION_COLUMNS, REJECTED_COLUMNS, InstructionRow


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    frame.reset_index(drop=True).to_parquet(path, index=False)
    return path


def read_table(path: str | Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def instruction_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Canonical instruction rows as a table with text columns, also when there are no rows: pandas
    gives an empty frame `object` columns, which the schema refuses as a whole rather than per row."""
    return pd.DataFrame(list(rows), columns=INSTRUCTION_COLUMNS).astype("str")


def empty_rejects() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row" else "str") for c in REJECTED_COLUMNS})


def rejects(rows: Iterable[dict]) -> pd.DataFrame:
    """A rejected-rows table from dicts with the RejectedRow keys (missing keys default to empty)."""
    records = [
        {"stage": "", "source": "", "row": 0, "id": "", "field": "", "rule": "", "reason": "", "record": "",
         **row}
        for row in rows
    ]
    if not records:
        return empty_rejects()
    frame = pd.DataFrame(records, columns=REJECTED_COLUMNS)
    frame["row"] = frame["row"].astype("int64")
    return frame


def record_json(row: dict | pd.Series) -> str:
    data = row.to_dict() if isinstance(row, pd.Series) else row
    return json.dumps(data, ensure_ascii=False, default=str)


def validate_instructions(frame: pd.DataFrame, *, stage: str, source: str, row_numbers: pd.Series | None = None,
                          sources: pd.Series | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split `frame` into rows that satisfy InstructionRow and rejects naming row, field and check.

    `row_numbers` and `sources` locate each row in the file it came from (default: its position
    in `frame`, and `source`).

    Table-level problems (missing or unexpected columns, a column that is not text) raise
    DataError naming the columns, because no single row is to blame.
    """
    missing = [c for c in INSTRUCTION_COLUMNS if c not in frame.columns]
    extra = [c for c in frame.columns if c not in INSTRUCTION_COLUMNS]
    if missing or extra:
        raise DataError(f"{source}: columns do not match the instruction schema "
                         f"(missing: {missing or 'none'}; unexpected: {extra or 'none'})")
    frame = frame.reset_index(drop=True)
    numbers = row_numbers.reset_index(drop=True) if row_numbers is not None else pd.Series(frame.index + 1)
    origin = sources.reset_index(drop=True) if sources is not None else pd.Series([source] * len(frame))
    duplicates = frame.index[frame["id"].duplicated(keep="first")]
    duplicate_rejects = [
        {"stage": stage, "source": origin[i], "row": int(numbers[i]), "id": str(frame.at[i, "id"]), "field": "id",
         "rule": "duplicate_id", "reason": f"id {frame.at[i, 'id']!r} already used by an earlier row",
         "record": record_json(frame.loc[i])}
        for i in duplicates
    ]
    frame, numbers = frame.drop(index=duplicates), numbers.drop(index=duplicates)
    try:
        InstructionRow.validate(frame, lazy=True)
        return frame.reset_index(drop=True), rejects(duplicate_rejects)
    except SchemaErrors as errors:
        failures = errors.failure_cases
    bad: dict[int, list[tuple[str, str]]] = {}
    for case in failures.itertuples():
        if pd.isna(case.index):
            raise DataError(f"{source}: column {case.column!r} fails {case.check} as a whole "
                            f"(got {case.failure_case!r}); every instruction column must be text") from None
        bad.setdefault(int(case.index), []).append((str(case.column), f"{case.check} (got {case.failure_case!r})"))
    rows = duplicate_rejects
    for index, problems in sorted(bad.items()):
        record = frame.loc[index]
        rows.append({
            "stage": stage, "source": origin[index], "row": int(numbers[index]), "id": str(record.get("id", "")),
            "field": problems[0][0], "rule": "schema",
            "reason": "; ".join(f"{column}: {check}" for column, check in problems),
            "record": record_json(record),
        })
    kept = frame.drop(index=list(bad)).reset_index(drop=True)
    return kept, rejects(sorted(rows, key=lambda r: r["row"]))


def validated(schema: type[pa.DataFrameModel], frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """`schema.validate(frame)` for tables a stage built itself from rows already checked one by one;
    if one still fails, that is reported as a DataError naming the table, rows and columns."""
    try:
        return schema.validate(frame, lazy=True)
    except SchemaErrors as errors:
        problems: dict[str, None] = {}  # ordered, each (row, check) once: a table-wide check names no column
        for c in errors.failure_cases.itertuples():
            row = f"row {int(c.index) + 1}" if not pd.isna(c.index) else "every row"
            column = f" column {c.column!r}" if c.schema_context == "Column" else ""
            got = f" (got {c.failure_case!r})" if column else ""
            problems[f"{row}{column}: {c.check}{got}"] = None
        shown = list(problems)[:5]
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise DataError(f"{source}: {len(problems)} {schema.__name__} check(s) failed: {'; '.join(shown)}{more}") from None


def check_rejected_fraction(n_read: int, rejected: pd.DataFrame, limit: float, stage: str) -> None:
    """Fail the stage when more than `limit` of its rows were rejected, listing the first failures."""
    if n_read == 0 or len(rejected) / n_read <= limit:
        return
    first = "\n".join(f"  {r.source} row {r.row} [{r.field or '-'}] {r.rule}: {r.reason[:200]}"
                      for r in rejected.head(10).itertuples())
    raise DataError(f"{stage}: {len(rejected)} of {n_read} rows rejected ({len(rejected) / n_read:.0%}), "
                     f"more than the allowed {limit:.0%}. First failures:\n{first}")


__all__ = ["pa", "write_table", "read_table", "instruction_frame", "rejects", "empty_rejects", "record_json", "validate_instructions",
           "check_rejected_fraction", "validated"]
