"""Task files: schema errors, demo items by reference, JSONL items, verbalisers."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignflow.data.families import build_families, is_heldout
from alignflow.evaluation.spec import TaskSpecError, load_items, load_task, mixed_order

TASKS = Path(__file__).resolve().parents[1] / "data" / "eval" / "tasks"


def write(tmp_path: Path, text: str, name: str = "task.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_every_shipped_task_loads_with_items_and_choices_that_hold_the_target():
    for path in sorted(TASKS.glob("*.yaml")):
        spec = load_task(path)
        docs = load_items(spec, spec.test)
        pool = load_items(spec, spec.fewshot, for_test=False)
        assert docs and pool, path.name
        if spec.output_type == "multiple_choice":
            assert all(doc.target in doc.choices and len(doc.choices) >= 2 for doc in docs), path.name


def test_recognition_items_are_held_out_and_choices_are_sibling_answers():
    spec = load_task(TASKS / "recognize_word.yaml")
    docs = load_items(spec, spec.test, heldout_percent=20)
    pool = load_items(spec, spec.fewshot, heldout_percent=20, for_test=False)
    assert spec.description is None and spec.category == "recognition"
    assert all(is_heldout(doc.input, 20) for doc in docs)
    assert not {doc.input for doc in docs} & {item.input for item in pool}
    apple = [doc for doc in load_items(spec, spec.test.model_copy(update={"split": "all"}))
             if doc.input == "apple"]
    assert {doc.group for doc in apple} == {"translate", "reverse", "uppercase", "length"}
    assert all(doc.choices == ("5", "APPLE", "elppa", "苹果") for doc in apple)
    # families are interleaved, so a limit keeps several of them
    assert len({doc.group for doc in docs[:12]}) >= 3


def test_ambiguous_items_are_skipped():
    # 2 + 2 == 2 * 2: neither add nor multiply can be told apart on "2, 2"; maximum and subtract can
    spec = load_task(TASKS / "recognize_numbers.yaml")
    docs = load_items(spec, spec.test.model_copy(update={"split": "all"}))
    assert {doc.group for doc in docs if doc.input == "2, 2"} == {"maximum", "subtract"}
    assert [doc for doc in docs if doc.input == "3, 2" and doc.group == "add"]
    family_count = len(build_families()["add"].items)
    assert len([d for d in docs if d.group == "add"]) < family_count


def test_verbalizer_rewrites_targets_choices_and_demonstrations():
    spec = load_task(TASKS / "learn_sentiment_en_flipped.yaml")
    docs = load_items(spec, spec.test)
    pool = load_items(spec, spec.fewshot, for_test=False)
    assert all(doc.choices == ("negative", "positive") for doc in docs)
    assert all(doc.target != doc.label for doc in docs + pool)
    assert {item.target for item in pool} == {"positive", "negative"}
    new_words = load_task(TASKS / "learn_sentiment_zh_new_words.yaml")
    assert {doc.target for doc in load_items(new_words, new_words.test)} == {"甲", "乙"}


def test_jsonl_items_relative_to_the_task_file(tmp_path):
    (tmp_path / "items.jsonl").write_text(
        '{"input": "a", "output": "x", "choices": ["x", "y"]}\n\n{"input": "b", "output": "y", "group": "g"}\n',
        encoding="utf-8")
    path = write(tmp_path, "name: t\ntest: {path: items.jsonl}\nfewshot: {path: items.jsonl}\n"
                           "output_type: multiple_choice\nchoices: item\n")
    spec = load_task(path)
    assert Path(spec.test.path).is_absolute()
    with pytest.raises(TaskSpecError, match="document items:3 has no choices"):
        load_items(spec, spec.test)
    pool = load_items(spec, spec.fewshot, for_test=False)
    assert [(d.input, d.target, d.group) for d in pool] == [("a", "x", ""), ("b", "y", "g")]


@pytest.mark.parametrize(("text", "message"), [
    ("name: t\ntest: {demo_kind: word}\nfewshot: {demo_kind: word}\nchoices: siblings\nshots: 3\n", "shots"),
    ("name: t\ntest: {demo_kind: word, path: x.jsonl}\nfewshot: {demo_kind: word}\nchoices: siblings\n",
     "exactly one of"),
    ("name: t\ntest: {demo_kind: word}\nfewshot: {demo_kind: word}\n", "need choices"),
    ("name: t\ntest: {demo_kind: word}\nfewshot: {demo_kind: word}\nchoices: siblings\nlanguage: fr\n", "language"),
])
def test_schema_errors_name_the_problem(tmp_path, text, message):
    with pytest.raises(TaskSpecError, match=message):
        load_task(write(tmp_path, text))


def test_unknown_demo_family_and_bad_jsonl_line(tmp_path):
    spec = load_task(write(tmp_path, "name: t\ntest: {demo_family: nope}\nfewshot: {demo_family: nope}\n"
                                     "output_type: generate\n"))
    with pytest.raises(TaskSpecError, match="unknown demo_family 'nope'"):
        load_items(spec, spec.test)
    (tmp_path / "bad.jsonl").write_text('{"input": "a", "output": "b"}\n{"input": "a"}\n', encoding="utf-8")
    spec = load_task(write(tmp_path, "name: t\ntest: {path: bad.jsonl}\nfewshot: {path: bad.jsonl}\n"
                                     "output_type: generate\n"))
    with pytest.raises(TaskSpecError, match=r"bad.jsonl:2"):
        load_items(spec, spec.test)


def test_mixed_order_is_a_fixed_permutation():
    spec = load_task(TASKS / "recognize_sentence_en.yaml")
    docs = load_items(spec, spec.test)
    assert mixed_order(list(reversed(docs))) == mixed_order(docs) == docs
