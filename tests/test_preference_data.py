"""Preference data: pairs from scores, reading rankings, HH and UltraFeedback imports, the oracle."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from pandera.errors import SchemaError, SchemaErrors

from alignflow.data.preferences import (
    import_hh,
    import_ultrafeedback,
    oracle_score,
    pairs_from_rows,
    pairs_from_scores,
    pairs_table,
    rankings_table,
    read_rankings,
    read_ultrafeedback,
)
from alignflow.errors import DataError
from alignflow.schemas.instruction import REJECTED_COLUMNS
from alignflow.schemas.preference import PREFERENCE_COLUMNS, PreferencePair, RankingRow


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def summary(pairs: list[dict]) -> list[tuple]:
    return [(p["id"], p["chosen"], p["rejected"], p["margin"]) for p in pairs]


# --- pairs_from_scores -----------------------------------------------------------------------------

RESPONSES = ["A", "B", "C", "D"]
SCORES = [3.0, 1.0, 3.0, 0.0]  # A and C tie for best


def test_all_pairs_uses_every_untied_pair_with_the_higher_score_chosen():
    pairs, counts = pairs_from_scores("p", "prompt", RESPONSES, SCORES, strategy="all_pairs", source="ann")
    assert summary(pairs) == [
        ("p-0-1", "A", "B", 2.0),
        ("p-0-3", "A", "D", 3.0),
        ("p-2-1", "C", "B", 2.0),  # the later response wins: chosen index comes first in the id
        ("p-1-3", "B", "D", 1.0),
        ("p-2-3", "C", "D", 3.0),
    ]
    assert counts == {"ties": 1, "identical": 0, "empty": 0}  # A vs C
    assert all(p["prompt"] == "prompt" and p["source"] == "ann" and p["task"] == "" for p in pairs)


def test_best_vs_rest_pairs_each_best_with_every_lower_and_drops_ties_among_the_best():
    pairs, counts = pairs_from_scores("p", "prompt", RESPONSES, SCORES, strategy="best_vs_rest", source="ann",
                                      task="math")
    assert summary(pairs) == [
        ("p-0-1", "A", "B", 2.0),
        ("p-0-3", "A", "D", 3.0),
        ("p-2-1", "C", "B", 2.0),
        ("p-2-3", "C", "D", 3.0),
    ]
    assert counts == {"ties": 1, "identical": 0, "empty": 0}
    assert {p["task"] for p in pairs} == {"math"}


def test_best_vs_rest_with_a_single_best_ignores_ties_below_it():
    pairs, counts = pairs_from_scores("q", "x", ["a", "b", "c"], [5, 2, 2], strategy="best_vs_rest", source="s")
    assert summary(pairs) == [("q-0-1", "a", "b", 3.0), ("q-0-2", "a", "c", 3.0)]
    assert counts == {"ties": 0, "identical": 0, "empty": 0}


def test_an_empty_response_is_never_paired_and_is_counted():
    """A policy can end its answer at once; the pair table allows no empty text, so such pairs are
    left out and counted rather than failing the stage."""
    pairs, counts = pairs_from_scores("e", "x", ["good", "", "  "], [2, 1, 0], strategy="all_pairs", source="s")
    assert pairs == []
    assert counts == {"ties": 0, "identical": 1, "empty": 2}  # ("", "  ") are the same text
    pairs_table(pairs)


def test_identical_texts_are_never_paired_and_are_counted():
    pairs, counts = pairs_from_scores("r", "x", ["same", " same\n", "other"], [2, 1, 0], strategy="all_pairs",
                                      source="s")
    assert [(p["chosen"].strip(), p["rejected"]) for p in pairs] == [("same", "other"), ("same", "other")]
    assert counts == {"ties": 0, "identical": 1, "empty": 0}


def test_pairs_from_scores_rejects_bad_arguments():
    with pytest.raises(ValueError, match="strategy"):
        pairs_from_scores("p", "x", ["a", "b"], [1, 0], strategy="best_of_n", source="s")
    with pytest.raises(ValueError, match="2 responses but 3 scores"):
        pairs_from_scores("p", "x", ["a", "b"], [1, 0, 2], strategy="all_pairs", source="s")


def test_pairs_from_rows_sums_counts_and_pairs_table_validates():
    rows = [{"prompt_id": "p", "prompt": "x", "responses": RESPONSES, "scores": SCORES},
            {"prompt_id": "q", "prompt": "y", "responses": ["a", "a", "b"], "scores": [2, 1, 1]}]
    pairs, counts = pairs_from_rows(rows, strategy="all_pairs", source="s")
    assert len(pairs) == 5 + 1  # q: a(0) > b(2); a(0) vs a(1) identical; a(1) vs b(2) tie
    assert counts == {"ties": 2, "identical": 1, "empty": 0}
    table = pairs_table(pairs)
    assert list(table.columns) == PREFERENCE_COLUMNS and len(table) == 6
    assert table["id"].is_unique


# --- read_rankings ---------------------------------------------------------------------------------

GOOD = {"prompt_id": "p1", "prompt": "2+2=", "responses": ["4", "5", "22"], "scores": [1.0, 0.2, 0.5]}


def bad_rows() -> list[tuple[dict, str, str]]:
    """(record, rule, field): one of each problem read_rankings must reject."""
    return [
        ({"prompt_id": "t", "prompt": "x", "responses": ["a", "b", "c"], "scores": [1, 1, 1]}, "ties_only", "scores"),
        ({"prompt_id": "m", "prompt": "x", "responses": [], "scores": []}, "missing_responses", "responses"),
        ({"prompt_id": "m1", "prompt": "x", "responses": ["only"], "scores": [1]}, "missing_responses", "responses"),
        ({"prompt_id": "m2", "prompt": "x", "scores": [1, 2]}, "missing_responses", "responses"),
        ({"prompt_id": "zzz", "prompt": "x", "responses": ["a", "b"], "scores": [1, 0]}, "unknown_prompt_id",
         "prompt_id"),
        ({"prompt_id": "i", "prompt": "x", "responses": ["a", "a "], "scores": [1, 0]}, "chosen_equals_rejected",
         "responses"),
        ({"prompt_id": "n", "prompt": "x", "responses": ["a", "b"], "scores": [1, "high"]}, "non_numeric_score",
         "scores"),
        ({"prompt_id": "l", "prompt": "x", "responses": ["a", "b", "c"], "scores": [1, 0]}, "length_mismatch",
         "scores"),
        ({"prompt_id": "r", "prompt": "x", "responses": ["a", "b"], "ranks": [1, 2, 3]}, "length_mismatch",
         "ranks"),
    ]


KNOWN = {"p1", "t", "m", "m1", "m2", "i", "n", "l", "r"}


def test_each_bad_row_is_rejected_with_rule_row_and_field(tmp_path):
    cases = bad_rows()
    path = write_jsonl(tmp_path / "rankings.jsonl", [GOOD] + [record for record, _, _ in cases])
    rows, rejects = read_rankings(path, KNOWN)
    assert [r["prompt_id"] for r in rows] == ["p1"]
    assert len(rows) + len(rejects) == 1 + len(cases)
    got = [(r["row"], r["rule"], r["field"]) for r in rejects]
    assert got == [(line, rule, field) for line, (_, rule, field) in enumerate(cases, start=2)]
    for reject, (record, _, _) in zip(rejects, cases, strict=True):
        assert list(reject) == REJECTED_COLUMNS
        assert reject["stage"] == "preferences" and reject["source"] == str(path)
        assert reject["id"] == record["prompt_id"]
        assert json.loads(reject["record"]) == record
        assert reject["reason"].startswith(f"row {reject['row']}:")


def test_unknown_prompt_ids_pass_when_no_known_set_is_given(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [GOOD, {**GOOD, "prompt_id": "zzz"}])
    rows, rejects = read_rankings(path, None)
    assert [r["prompt_id"] for r in rows] == ["p1", "zzz"] and rejects == []


def test_ranks_become_negative_scores_so_margins_are_rank_differences(tmp_path):
    record = {"prompt_id": "p1", "prompt": "x", "responses": ["third", "first", "second"], "ranks": [3, 1, 2]}
    rows, rejects = read_rankings(write_jsonl(tmp_path / "r.jsonl", [record]), None)
    assert rejects == []
    assert rows == [{"prompt_id": "p1", "prompt": "x", "responses": ["third", "first", "second"],
                     "scores": [-3.0, -1.0, -2.0]}]
    pairs, _ = pairs_from_scores("p1", "x", rows[0]["responses"], rows[0]["scores"], strategy="all_pairs",
                                 source="s")
    assert summary(pairs) == [("p1-1-0", "first", "third", 2.0), ("p1-2-0", "second", "third", 1.0),
                              ("p1-1-2", "first", "second", 1.0)]


def test_csv_rankings_with_json_cells_and_a_missing_prompt_filled_from_known(tmp_path):
    path = tmp_path / "r.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt_id", "prompt", "responses", "scores", "ranks"])
        writer.writerow(["p1", "", json.dumps(["yes", "no"]), "", json.dumps([1, 2])])
        writer.writerow(["p2", "q?", json.dumps(["a", "b"]), json.dumps([0.5, 0.9]), ""])
        writer.writerow(["p3", "q?", json.dumps(["a", "b"]), "[1, oops]", ""])
        writer.writerow(["p4", "q?", json.dumps(["a", "b"]), json.dumps([1, 2]), json.dumps([1, 2])])
    rows, rejects = read_rankings(path, {"p1": "Is it?", "p2": "unused", "p3": "", "p4": ""})
    assert rows == [{"prompt_id": "p1", "prompt": "Is it?", "responses": ["yes", "no"], "scores": [-1.0, -2.0]},
                    {"prompt_id": "p2", "prompt": "q?", "responses": ["a", "b"], "scores": [0.5, 0.9]}]
    assert [(r["row"], r["rule"], r["field"]) for r in rejects] == [(3, "malformed_json", "scores"),
                                                                     (4, "scores_and_ranks", "ranks")]
    table = rankings_table(rows)
    assert json.loads(table.loc[0, "responses"]) == ["yes", "no"]
    assert list(rankings_table([]).columns) == ["prompt_id", "prompt", "responses", "scores"]


def test_more_row_problems_are_rejected_not_dropped(tmp_path):
    records = [GOOD, GOOD, {**GOOD, "prompt_id": "p2", "prompt": ""},
               {**GOOD, "prompt_id": "p3", "scores": [True, 0, 1]}, {**GOOD, "prompt_id": ""}]
    path = write_jsonl(tmp_path / "r.jsonl", records)
    path.write_text(path.read_text() + "{not json\n\n", encoding="utf-8")
    rows, rejects = read_rankings(path, None)
    assert len(rows) == 1
    assert [(r["row"], r["rule"], r["field"]) for r in rejects] == [
        (2, "duplicate_prompt_id", "prompt_id"), (3, "missing_prompt", "prompt"),
        (4, "non_numeric_score", "scores"), (5, "missing_prompt_id", "prompt_id"), (6, "malformed_json", "")]
    assert all(r["stage"] == "preferences" and list(r) == REJECTED_COLUMNS for r in rejects)


def test_whole_file_problems_raise_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match="nope.jsonl"):
        read_rankings(tmp_path / "nope.jsonl", None)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.jsonl"):
        read_rankings(empty, None)
    headless = tmp_path / "cols.csv"
    headless.write_text("prompt_id,prompt\np1,x\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"cols.csv.*responses"):
        read_rankings(headless, None)
    with pytest.raises(ValueError, match="unsupported"):
        read_rankings(tmp_path / "r.txt", None)


# --- imports ---------------------------------------------------------------------------------------

HH_PROMPT = "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: What is 2+2?\n\nAssistant:"


def test_hh_import_splits_prompt_and_final_replies(tmp_path):
    records = [
        {"chosen": HH_PROMPT + " It is 4.", "rejected": HH_PROMPT + " It is 5."},
        {"chosen": HH_PROMPT + " It is 4.", "rejected": HH_PROMPT.replace("2+2", "3+3") + " It is 6."},
        {"chosen": "\n\nHuman: no reply here", "rejected": "\n\nHuman: no reply here"},
        {"chosen": HH_PROMPT + " Same.", "rejected": HH_PROMPT + " Same. "},
        {"chosen": HH_PROMPT + " Fine."},
    ]
    path = write_jsonl(tmp_path / "hh.jsonl", records)
    pairs, rejects = import_hh(path)
    assert pairs == [{"id": "hh-1", "prompt": HH_PROMPT, "chosen": "It is 4.", "rejected": "It is 5.",
                      "margin": 1.0, "source": f"hh:{path}", "task": ""}]
    assert [(r["row"], r["rule"], r["field"]) for r in rejects] == [
        (2, "prompt_mismatch", "rejected"), (3, "no_assistant_turn", "chosen"),
        (4, "chosen_equals_rejected", "rejected"), (5, "missing_field", "rejected")]
    assert len(pairs) + len(rejects) == len(records)
    pairs_table(pairs)


def test_ultrafeedback_import_ranks_completions_by_score(tmp_path):
    records = [
        {"instruction": "Name a colour.", "completions": [
            {"response": "Blue.", "overall_score": 8.0},
            {"response": "Seven.", "overall_score": 2.0},
            {"response": "Red.", "overall_score": 8.0}]},
        {"prompt": "Say hi.", "completions": [
            {"response": "hi", "fine-grained_score": 4.5}, {"response": "bye", "fine-grained_score": 1.25}]},
        {"prompt": "Tied.", "completions": [{"response": "a", "overall_score": 5}, {"response": "b", "overall_score": 5}]},
        {"prompt": "Bad score.", "completions": [{"response": "a", "overall_score": "N/A"},
                                                 {"response": "b", "overall_score": 1}]},
        {"prompt": "One.", "completions": [{"response": "a", "overall_score": 1}]},
    ]
    path = write_jsonl(tmp_path / "uf.jsonl", records)
    pairs, rejects = import_ultrafeedback(path, "best_vs_rest")
    assert summary(pairs) == [("uf-1-0-1", "Blue.", "Seven.", 6.0), ("uf-1-2-1", "Red.", "Seven.", 6.0),
                              ("uf-2-0-1", "hi", "bye", 3.25)]
    assert pairs[0]["prompt"] == "Name a colour." and pairs[0]["source"] == f"ultrafeedback:{path}"
    assert [(r["row"], r["rule"], r["field"]) for r in rejects] == [
        (3, "ties_only", "completions"), (4, "non_numeric_score", "completions"),
        (5, "missing_responses", "completions")]
    rows, _ = read_ultrafeedback(path)
    _, counts = pairs_from_rows(rows, strategy="best_vs_rest", source="s")
    assert counts == {"ties": 1, "identical": 0, "empty": 0}
    all_pairs, _ = import_ultrafeedback(path, "all_pairs")
    assert len(all_pairs) == 3  # Blue/Red tie is dropped under either strategy


# --- oracle ----------------------------------------------------------------------------------------


def test_oracle_exact_answer_beats_every_wrong_one():
    assert oracle_score("  42\nbecause 6*7", "42") == 1.0
    assert oracle_score("42", " 42\n") == 1.0
    wrong = ["41", "420", "forty-two", "", "the answer is 42", "42 apples"]
    partial = [oracle_score(w, "42") for w in wrong]
    assert all(0.0 <= s < 0.5 for s in partial)
    assert max(partial) < oracle_score("42", "42")
    assert oracle_score("41", "42") > oracle_score("xy", "42") == 0.0  # closer wrong answers rank higher
    assert oracle_score("first line\n42", "42") < 0.5  # only the first line counts


# --- schemas ---------------------------------------------------------------------------------------


def pair_frame(**overrides) -> pd.DataFrame:
    row = {"id": "p-0-1", "prompt": "x", "chosen": "a", "rejected": "b", "margin": 1.0, "source": "s", "task": ""}
    return pd.DataFrame([row | overrides], columns=PREFERENCE_COLUMNS)


def test_preference_pair_accepts_a_good_pair_and_rejects_bad_ones():
    PreferencePair.validate(pair_frame())
    with pytest.raises((SchemaError, SchemaErrors), match="chosen and rejected must differ"):
        PreferencePair.validate(pair_frame(rejected="a"))
    with pytest.raises((SchemaError, SchemaErrors), match="margin"):
        PreferencePair.validate(pair_frame(margin=-0.5))
    with pytest.raises((SchemaError, SchemaErrors)):
        PreferencePair.validate(pair_frame(chosen=""))
    with pytest.raises((SchemaError, SchemaErrors)):
        PreferencePair.validate(pd.concat([pair_frame(), pair_frame()], ignore_index=True))  # duplicate id
    with pytest.raises((SchemaError, SchemaErrors)):
        PreferencePair.validate(pair_frame().assign(extra=1))  # strict


def test_empty_pairs_table_keeps_the_columns():
    table = pairs_table([])
    assert list(table.columns) == PREFERENCE_COLUMNS and table.empty
    with pytest.raises(DataError, match=r"^preference pairs: 1 PreferencePair check\(s\) failed: row 1: chosen and "
                       r"rejected must differ"):
        pairs_table([{"id": "x", "prompt": "p", "chosen": "same", "rejected": "same", "margin": 0.0,
                      "source": "s", "task": ""}])


def test_ranking_row_checks_lists_and_lengths():
    good = {"prompt_id": "p", "prompt": "x", "responses": json.dumps(["a", "b"]), "scores": json.dumps([1, 0])}
    RankingRow.validate(pd.DataFrame([good]))
    for bad in ({"responses": json.dumps(["a"]), "scores": "[1]"}, {"scores": json.dumps([1, "x"])},
                {"scores": json.dumps([1, 0, 2])}, {"responses": "not json"}):
        with pytest.raises((SchemaError, SchemaErrors)):
            RankingRow.validate(pd.DataFrame([good | bad]))
