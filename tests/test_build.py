"""Instruction data from seeds and templated datasets; bad input never loses a row."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO

from alignflow.data.instructions import TemplateSet, basic_messages, templated_rows
from alignflow.data.loaders import read_csv, read_jsonl, read_records
from alignflow.data.tables import check_rejected_fraction, rejects
from alignflow.pipeline.config import parse_config
from alignflow.schemas.instruction import INSTRUCTION_COLUMNS
from alignflow.tasks.build import collect_rows
from alignflow.tasks.validate import data_card, split_by_task

GOOD = {"id": "a", "task": "qa", "format": "basic", "instruction": "回答问题。", "input": "1+1?", "output": "2"}


def jsonl(path: Path, *rows) -> Path:
    lines = [row if isinstance(row, bytes) else json.dumps(row, ensure_ascii=False).encode() for row in rows]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def build(tmp_path: Path, seeds: list[Path], datasets: list[dict] | None = None, **options):
    config = parse_config({"name": "t", "base_model": "m",
                           "stages": {"build": {"seeds": [str(s) for s in seeds], "datasets": datasets or [],
                                                **options}}})
    valid, rejected, n_read = collect_rows(config.stages.build, seed=0)
    assert n_read == len(valid) + len(rejected), "rows read = rows kept + rows rejected"
    return valid, rejected


def only_reject(rejected: pd.DataFrame) -> pd.Series:
    assert len(rejected) == 1, rejected.to_string()
    return rejected.iloc[0]


def test_shipped_seeds_cover_formats_languages_and_tasks():
    valid, rejected = build(Path.cwd(), [REPO / "data/seed/instructions.jsonl"])
    assert len(rejected) == 0 and len(valid) >= 60
    assert set(valid["format"]) == {"basic", "dialogue", "multi_turn"}
    assert valid["task"].nunique() >= 8
    text = " ".join(valid["instruction"])
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text) and any(ch.isascii() and ch.isalpha() for ch in text)
    multi = valid[valid["format"] == "multi_turn"].iloc[0]
    messages = json.loads(multi["messages"])
    assert [m["role"] for m in messages][:4] == ["user", "assistant", "user", "assistant"]
    assert multi["output"] == messages[-1]["content"]


def test_basic_rows_become_one_user_and_one_assistant_turn():
    assert basic_messages("翻译", "hello", "你好") == [{"role": "user", "content": "翻译\nhello"},
                                                   {"role": "assistant", "content": "你好"}]
    assert basic_messages("写诗", "", "春") [0] == {"role": "user", "content": "写诗"}


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = jsonl(tmp_path / "s.jsonl", GOOD, b'{"id": "b", "task": ', {**GOOD, "id": "c"})
    valid, rejected = build(tmp_path, [path])
    row = only_reject(rejected)
    assert (row.source, row.row, row.rule) == (str(path), 2, "malformed_json")
    assert list(valid["id"]) == ["a", "c"]


def test_wrong_types_missing_and_extra_fields(tmp_path):
    path = jsonl(tmp_path / "s.jsonl", {**GOOD, "id": "n", "output": 2}, {**GOOD, "id": "m", "instruction": None},
                 {**GOOD, "id": "x", "colour": "red"}, {"id": "d", "task": "chat", "format": "dialogue"}, GOOD)
    valid, rejected = build(tmp_path, [path])
    assert list(valid["id"]) == ["a"]
    found = {(r.row, r.rule, r.field) for r in rejected.itertuples()}
    assert found == {(1, "wrong_type", "output"), (2, "missing_field", "instruction"),
                     (3, "unexpected_field", "colour"), (4, "missing_field", "messages")}
    assert "output must be text, got int" in rejected.iloc[0]["reason"]


def test_empty_strings_and_bad_conversations_fail_the_schema(tmp_path):
    bad_dialogue = {"id": "d", "task": "chat", "format": "dialogue",
                    "messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]}
    path = jsonl(tmp_path / "s.jsonl", {**GOOD, "id": "e", "output": ""}, {**GOOD, "id": "f", "format": "essay"},
                 bad_dialogue, GOOD)
    valid, rejected = build(tmp_path, [path])
    assert list(valid["id"]) == ["a"]
    by_row = {r.row: r for r in rejected.itertuples()}
    assert by_row[1].field == "output" and "str_length" in by_row[1].reason
    assert (by_row[2].field, by_row[2].rule) == ("format", "unknown_format") and "essay" in by_row[2].reason
    assert by_row[3].field == "messages" and "ending with the assistant" in by_row[3].reason
    assert all(r.source == str(path) for r in rejected.itertuples())


def test_invalid_utf8_bom_and_crlf(tmp_path):
    good = json.dumps(GOOD, ensure_ascii=False).encode()
    second = json.dumps({**GOOD, "id": "b"}, ensure_ascii=False).encode()
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\r\n" + b'{"id": "\xff\xfe"}\r\n' + second + b"\r\n")
    valid, rejected = build(tmp_path, [path])
    assert list(valid["id"]) == ["a", "b"]
    row = only_reject(rejected)
    assert (row.row, row.rule) == (2, "invalid_utf8") and "not UTF-8" in row.reason


def test_duplicate_ids_keep_the_first(tmp_path):
    path = jsonl(tmp_path / "s.jsonl", GOOD, {**GOOD, "output": "3"}, {**GOOD, "id": "b"})
    valid, rejected = build(tmp_path, [path])
    row = only_reject(rejected)
    assert (row.row, row.rule, row.field, row.id) == (2, "duplicate_id", "id", "a")
    assert valid.set_index("id").loc["a", "output"] == "2"


def test_duplicate_ids_across_files_name_the_second_file(tmp_path):
    first = jsonl(tmp_path / "one.jsonl", GOOD)
    second = jsonl(tmp_path / "two.jsonl", {**GOOD, "id": "z"}, GOOD)
    _, rejected = build(tmp_path, [first, second])
    row = only_reject(rejected)
    assert (row.source, row.row, row.rule) == (str(second), 2, "duplicate_id")


def test_a_10mb_row_is_rejected_as_too_long_not_a_crash(tmp_path):
    path = jsonl(tmp_path / "s.jsonl", {**GOOD, "id": "big", "input": "字" * 10_000_000}, GOOD)
    valid, rejected = build(tmp_path, [path])
    row = only_reject(rejected)
    assert (row.rule, row.field) == ("too_long", "input")
    assert len(json.loads(row.record)["input"]) == 10_000_000, "the rejected row is kept whole"
    assert list(valid["id"]) == ["a"]


def test_empty_file_is_a_clear_error(tmp_path):
    for content in (b"", b"\n\n", b"\xef\xbb\xbf"):
        (tmp_path / "empty.jsonl").write_bytes(content)
        with pytest.raises(ValueError, match=r"empty\.jsonl: file is empty"):
            build(tmp_path, [tmp_path / "empty.jsonl"])
    with pytest.raises(ValueError, match="no such file"):
        read_records(str(tmp_path / "absent.jsonl"))


def test_non_object_lines_are_rejected(tmp_path):
    records, refused = read_jsonl(jsonl(tmp_path / "s.jsonl", GOOD, [1, 2], "text"))
    assert [n for n, _ in records] == [1]
    assert [(r["row"], r["rule"]) for r in refused] == [(2, "not_an_object"), (3, "not_an_object")]


def test_csv_bad_rows(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\r\nfine,1\r\ntoo,many,values\r\nshort\r\n\"multi\r\nline\",0\r\n"
                     b"bad \xff byte,1\r\n")
    records, refused = read_csv(path)
    assert [(n, r["text"]) for n, r in records] == [(1, "fine"), (4, "multi\r\nline")]
    assert [(r["row"], r["rule"]) for r in refused] == [(2, "extra_fields"), (3, "missing_field"),
                                                        (5, "invalid_utf8")]
    assert refused[2]["field"] == "text"
    (tmp_path / "nohead.csv").write_text(",label\nx,1\n")
    with pytest.raises(ValueError, match="header"):
        read_csv(tmp_path / "nohead.csv")


def test_templated_conversion_uses_several_phrasings_and_verbalisers(tmp_path):
    templates = TemplateSet.from_yaml(REPO / "data/templates/sentiment.yaml")
    records = [(i + 1, {"text": f"评论{i}", "label": str(i % 2)}) for i in range(40)]
    rows, refused = templated_rows(records, templates, "s.csv", seed=0, max_chars=1000)
    assert not refused and len(rows) == 40
    assert {r["output"] for r in rows} == {"积极", "消极"}
    assert len({r["instruction"] for r in rows}) >= 3, "FLAN-style: several phrasings"
    assert rows == templated_rows(records, templates, "s.csv", seed=0, max_chars=1000)[0]
    assert rows != templated_rows(records, templates, "s.csv", seed=1, max_chars=1000)[0]
    bad, refused = templated_rows([(1, {"text": "x", "label": "7"}), (2, {"text": "", "label": "1"})], templates,
                                  "s.csv", seed=0, max_chars=1000)
    assert not bad
    assert [(r["rule"], r["field"]) for r in refused] == [("unknown_label", "label"), ("missing_field", "text")]


def test_template_file_errors_are_clear(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("task: x\ncolumns: [text]\ntemplates:\n  - {instruction: 'say {txt}', output: '{text}'}\n")
    with pytest.raises(ValueError, match=r"uses \{txt\}, not in columns"):
        TemplateSet.from_yaml(path)


def test_shipped_datasets_convert_and_hub_style_folders_load(tmp_path):
    datasets = [{"path": str(REPO / "data/raw/sentiment.csv"), "templates": str(REPO / "data/templates/sentiment.yaml")},
                {"path": str(REPO / "data/raw/nli.csv"), "templates": str(REPO / "data/templates/nli.yaml"),
                 "limit": 5}]
    valid, rejected = build(tmp_path, [], datasets)
    assert len(rejected) == 0 and set(valid["task"]) == {"sentiment", "nli"}
    assert (valid["task"] == "nli").sum() == 5
    folder = tmp_path / "hub_like"
    folder.mkdir()
    pd.DataFrame({"text": ["好", "坏"], "label": ["1", "0"]}).to_parquet(folder / "train.parquet")
    records, _ = read_records(str(folder), "train")  # goes through datasets.load_dataset
    assert [r["text"] for _, r in records] == ["好", "坏"]


def test_rejection_budget_lists_first_failures():
    refused = rejects([{"source": "f.jsonl", "row": 3, "rule": "malformed_json", "reason": "bad"}] * 3)
    check_rejected_fraction(10, refused, 0.5, "build")
    with pytest.raises(ValueError, match=r"(?s)3 of 4 rows rejected \(75%\).*f\.jsonl row 3 \[-\] malformed_json: bad"):
        check_rejected_fraction(4, refused, 0.5, "build")


def test_split_by_task_and_data_card():
    frame = pd.DataFrame({"task": ["a"] * 10 + ["b"] * 2 + ["c"], "source": ["seed:x"] * 13,
                          "format": ["basic"] * 13, "id": [str(i) for i in range(13)]})
    train, validation = split_by_task(frame, 0.2, seed=0)
    assert validation["task"].value_counts().to_dict() == {"a": 2, "b": 1}
    assert len(train) + len(validation) == 13 and not set(train["id"]) & set(validation["id"])
    card = data_card(frame, rejects([{"rule": "too_long"}, {"rule": "too_long"}, {"rule": "schema"}]))
    assert card["task"] == {"a": 10, "b": 2, "c": 1}
    assert card["source"] == {"seed": 13}
    assert card["rejection rule"] == {"schema": 1, "too_long": 2}


def test_demo_family_rows_use_train_inputs_paraphrases_and_variants(tmp_path):
    from alignflow.data.families import build_families, is_heldout

    settings = {"families": ["sentiment_zh", "add"], "per_family": 15,
                "instructions": {"sentiment_zh": "这条评论是好评还是差评？"},
                "variants": {"satisfied": {"family": "sentiment_zh", "instruction": "写这条评论的人满意吗？"}}}
    valid, rejected = build(tmp_path, [], demo_families=settings)
    assert len(valid) == 45 and rejected.empty
    by_task = {task: frame for task, frame in valid.groupby("task")}
    assert set(by_task) == {"sentiment_zh", "add", "satisfied"}
    assert set(by_task["sentiment_zh"]["instruction"]) == {"这条评论是好评还是差评？"}
    assert set(by_task["add"]["instruction"]) == {build_families()["add"].description["zh"]}
    assert set(by_task["satisfied"]["source"]) == {"demo:satisfied"}
    assert not any(is_heldout(text, 20) for text in valid["input"]), "held-out inputs never become rows"
    answers = {item.input: item.output for item in build_families()["sentiment_zh"].items}
    assert all(answers[x] == y for x, y in zip(by_task["satisfied"]["input"], by_task["satisfied"]["output"],
                                                 strict=True))
    with pytest.raises(ValueError, match="unknown task families"):
        build(tmp_path, [], demo_families={"families": ["no_such_family"]})


# --- seeds-only builds (issue: a valid seed file failed `build` with a dtype traceback) ----------

def seed_row(i: int, **extra) -> dict:
    return {"id": f"r{i}", "task": "sentiment", "format": "basic", "instruction": "判断情感",
            "input": f"这部电影很棒{i}！", "output": "积极", **extra}


def test_seeds_only_build_with_a_user_source_keeps_every_row_and_its_label(tmp_path):
    path = jsonl(tmp_path / "mine.jsonl", *(seed_row(i, source="my-set") for i in range(10)))
    valid, rejected = build(tmp_path, [path])
    assert len(valid) == 10 and len(rejected) == 0
    assert set(valid["source"]) == {"seed:my-set"}


def test_seeds_only_build_without_a_source_names_the_file(tmp_path):
    path = jsonl(tmp_path / "plain.jsonl", *(seed_row(i) for i in range(3)))
    valid, rejected = build(tmp_path, [path])
    assert len(valid) == 3 and len(rejected) == 0
    assert set(valid["source"]) == {f"seed:{path}"}


def test_seeds_only_build_with_bom_and_crlf_line_ends(tmp_path):
    lines = [json.dumps(seed_row(i, source="my-set"), ensure_ascii=False).encode() for i in range(4)]
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n")
    valid, rejected = build(tmp_path, [path])
    assert list(valid["id"]) == ["r0", "r1", "r2", "r3"] and len(rejected) == 0


def test_seeds_only_build_with_one_bad_row_keeps_the_others(tmp_path):
    rows = [seed_row(i, source="my-set") for i in range(5)]
    rows[2] = {**rows[2], "source": 7}
    path = jsonl(tmp_path / "mine.jsonl", *rows)
    valid, rejected = build(tmp_path, [path], max_rejected_fraction=0.5)
    assert list(valid["id"]) == ["r0", "r1", "r3", "r4"]
    row = only_reject(rejected)
    assert (row.source, row.row, row.field, row.rule) == (str(path), 3, "source", "wrong_type")


def test_a_build_whose_every_row_is_rejected_still_writes_its_rejects(tmp_path):
    """No valid row at all: an empty table of the right shape, not a dtype failure of the whole table."""
    path = jsonl(tmp_path / "bad.jsonl", *({**seed_row(i), "colour": "red"} for i in range(3)))
    valid, rejected = build(tmp_path, [path])
    assert valid.empty and list(valid.columns) == INSTRUCTION_COLUMNS
    assert list(rejected["rule"]) == ["unexpected_field"] * 3


def test_a_stage_schema_failure_is_one_line_naming_table_row_and_column():
    from alignflow.data.tables import validated
    from alignflow.errors import DataError
    from alignflow.schemas.instruction import InstructionRow

    frame = pd.DataFrame([{**seed_row(0), "messages": "[]", "source": "x"}]).astype("str")
    with pytest.raises(DataError) as error:
        validated(InstructionRow, frame, "some/table.parquet")
    message = str(error.value)
    assert "\n" not in message
    assert "some/table.parquet" in message and "row 1" in message and "'messages'" in message
