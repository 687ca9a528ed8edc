"""Read records from JSONL, CSV, Parquet or `datasets.load_dataset`, never losing a row.

Each loader returns (records, rejects): records are (row number, dict) pairs; a row that cannot
be read (malformed JSON, invalid UTF-8, wrong number of CSV fields, ...) becomes a reject naming
file, row and field. Problems with the file as a whole (missing, empty, no header) raise
DataError naming the file.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd

from alignflow.errors import DataError

Record = tuple[int, dict]
SURROGATES = range(0xDC80, 0xDD00)  # bytes that were not UTF-8, under errors="surrogateescape"


def _reject(source: str, row: int, rule: str, reason: str, field: str = "", record: str = "") -> dict:
    return {"stage": "build", "source": source, "row": row, "field": field, "rule": rule, "reason": reason,
            "record": record}


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        raise DataError(f"{path}: file is empty (no rows)")
    return data


def _has_invalid_utf8(text: str) -> bool:
    return any(ord(ch) in SURROGATES for ch in text)


def read_jsonl(path: Path) -> tuple[list[Record], list[dict]]:
    """One JSON object per line; blank lines are skipped; CRLF and a BOM are accepted."""
    records, rejects = [], []
    for number, raw in enumerate(_read_bytes(path).split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            rejects.append(_reject(str(path), number, "invalid_utf8",
                                   f"line {number} is not UTF-8 ({error.reason} at byte {error.start})",
                                   record=raw.decode("utf-8", "replace")))
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            rejects.append(_reject(str(path), number, "malformed_json",
                                   f"line {number}: {error.msg} at column {error.colno}", record=line))
            continue
        if not isinstance(value, dict):
            rejects.append(_reject(str(path), number, "not_an_object",
                                   f"line {number} holds a JSON {type(value).__name__}, not an object", record=line))
            continue
        records.append((number, value))
    return records, rejects


def read_csv(path: Path) -> tuple[list[Record], list[dict]]:
    """A header row, then one record per row; quoted multi-line fields, CRLF and a BOM are accepted."""
    text = _read_bytes(path).decode("utf-8", errors="surrogateescape")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or any(not name.strip() for name in reader.fieldnames):
        raise DataError(f"{path}: the first line must be a header naming every column")
    if len(set(reader.fieldnames)) != len(reader.fieldnames):
        raise DataError(f"{path}: duplicate column names in the header {reader.fieldnames}")
    records, rejects = [], []
    for number, row in enumerate(reader, start=1):
        raw = json.dumps(row, ensure_ascii=False, default=str)
        if None in row:
            rejects.append(_reject(str(path), number, "extra_fields",
                                   f"row {number} has {len(row[None])} more value(s) than the header", record=raw))
            continue
        short = [name for name, value in row.items() if value is None]
        if short:
            rejects.append(_reject(str(path), number, "missing_field",
                                   f"row {number} has no value for {short}", field=short[0], record=raw))
            continue
        broken = [name for name, value in row.items() if _has_invalid_utf8(value)]
        if broken:
            rejects.append(_reject(str(path), number, "invalid_utf8", f"row {number}: {broken[0]} is not UTF-8",
                                   field=broken[0], record=raw.encode("utf-8", "replace").decode("utf-8")))
            continue
        records.append((number, dict(row)))
    return records, rejects


def read_parquet(path: Path) -> tuple[list[Record], list[dict]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    frame = pd.read_parquet(path)
    if frame.empty:
        raise DataError(f"{path}: file is empty (no rows)")
    return [(i + 1, row) for i, row in enumerate(frame.to_dict(orient="records"))], []


def read_hf_dataset(name: str, split: str) -> tuple[list[Record], list[dict]]:
    """`datasets.load_dataset(name, split=split)`: a hub name, or a local folder/script."""
    from datasets import load_dataset

    try:
        dataset = load_dataset(name, split=split)
    except Exception as error:  # noqa: BLE001 - datasets raises many types; report them all the same way
        raise DataError(f"{name}: cannot load dataset split {split!r}: {error}") from None
    if len(dataset) == 0:
        raise DataError(f"{name}: split {split!r} is empty (no rows)")
    return [(i + 1, dict(row)) for i, row in enumerate(dataset)], []


def read_records(location: str, split: str = "train") -> tuple[list[Record], list[dict]]:
    """Dispatch on the file ending; anything else goes to `datasets.load_dataset`."""
    path = Path(location)
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".json"}:
        return read_jsonl(path)
    if suffix in {".csv", ".tsv"}:
        return read_csv(path)
    if suffix == ".parquet":
        return read_parquet(path)
    return read_hf_dataset(location, split)
