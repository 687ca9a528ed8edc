from collections import Counter

import pytest

from alignflow.data.families import FIELD_LABELS, build_families, is_heldout, split_items
from alignflow.demo.corpus import generate_streams


def streams(**overrides):
    options = dict(n_streams=400, max_items=5, description_prob=0.5, languages=["zh", "en"], families=None,
                   heldout_percent=20, seed=0)
    options.update(overrides)
    return list(generate_streams(**options))


def test_answers_are_verifiable():
    families = build_families()
    item = next(i for i in families["add"].items if i.input == "7, 5")
    assert item.output == "12"
    assert next(i for i in families["subtract"].items if i.input == "3, 9").output == "-6"
    assert next(i for i in families["reverse"].items if i.input == "apple").output == "elppa"
    assert next(i for i in families["translate"].items if i.input == "apple").output == "苹果"
    assert {i.output for i in families["sentiment_zh"].items} == {"积极", "消极"}


def test_families_of_a_kind_share_inputs_so_the_task_is_ambiguous_without_context():
    by_kind: dict[str, list] = {}
    for family in build_families().values():
        by_kind.setdefault(family.kind, []).append(family)
    for kind, families in by_kind.items():
        assert len(families) >= 2, kind
        inputs = [{i.input for i in f.items} for f in families]
        assert all(s == inputs[0] for s in inputs), kind


def test_heldout_inputs_never_appear_in_the_corpus():
    rows = streams(n_streams=2000)
    text = "\n".join(row["text"] for row in rows)
    for family in build_families().values():
        _, heldout = split_items(family, 20)
        assert heldout, family.name
        for item in heldout[:10]:
            assert f"：{item.input}\n" not in text and f": {item.input}\n" not in text


def test_split_is_by_input_and_stable():
    assert is_heldout("apple", 20) == is_heldout("apple", 20)
    assert not is_heldout("apple", 0)
    assert is_heldout("apple", 100)


def test_streams_are_reproducible_and_use_the_notes_format():
    assert streams(seed=3) == streams(seed=3)
    assert streams(seed=3) != streams(seed=4)
    rows = streams()
    for row in rows:
        labels = FIELD_LABELS[row["language"]]
        assert row["text"].count(labels["input"]) == row["n_items"]
        assert row["text"].count(labels["output"]) == row["n_items"]
        assert row["text"].startswith(labels["task"]) == row["has_description"]
    share = sum(row["has_description"] for row in rows) / len(rows)
    assert 0.4 < share < 0.6
    assert set(Counter(row["language"] for row in rows)) == {"zh", "en"}


def test_unknown_family_is_an_error():
    with pytest.raises(ValueError, match="unknown task families"):
        streams(families=["add", "poetry"])


def test_relabelled_streams_remap_labels_consistently_and_never_use_the_evaluations_words():
    import re

    plain = streams(n_streams=600, families=["sentiment_zh", "topic_en", "add"])
    mixed = streams(n_streams=600, families=["sentiment_zh", "topic_en", "add"], relabel_prob=0.5)
    assert [row["text"] for row in streams(n_streams=600, families=["sentiment_zh", "topic_en", "add"],
                                           relabel_prob=0.0)] == [row["text"] for row in plain]
    assert not any(row["relabelled"] for row in plain)
    relabelled = [row for row in mixed if row["relabelled"]]
    assert {row["family"] for row in relabelled} == {"sentiment_zh", "topic_en"}  # classification only
    assert 0.35 < len(relabelled) / sum(row["family"] != "add" for row in mixed) < 0.65
    families = build_families()
    flipped = 0
    for row in relabelled:
        label = FIELD_LABELS[row["language"]]["output"]
        truth = {i.input: i.output for i in families[row["family"]].items}
        pairs = re.findall(rf"{FIELD_LABELS[row['language']]['input']}(.+)\n{label}(.+)\n", row["text"])
        mapping = {}
        for sentence, shown in pairs:
            assert mapping.setdefault(truth[sentence], shown) == shown, row["text"]  # one map per stream
            assert shown != truth[sentence] and shown not in {"甲", "乙"}
        assert len(set(mapping.values())) == len(mapping)  # one-to-one
        flipped += all(shown in set(truth.values()) for shown in mapping.values())
    assert 0 < flipped < len(relabelled)  # both permutations of the labels and stand-in words


def test_flip_share_zero_relabels_with_stand_in_words_only():
    families = build_families()
    own = {i.output for name in ("sentiment_zh", "topic_en") for i in families[name].items}
    rows = streams(n_streams=300, families=["sentiment_zh", "topic_en"], relabel_prob=1.0, flip_share=0.0)
    assert all(row["relabelled"] for row in rows)
    for row in rows:
        label = FIELD_LABELS[row["language"]]["output"]
        shown = {line.removeprefix(label) for line in row["text"].splitlines() if line.startswith(label)}
        assert shown and not shown & own, row["text"]


def test_repeating_streams_draw_their_items_from_a_few_inputs():
    """repeat_prob: relabelled streams whose inputs recur (at most repeat_inputs distinct ones), so a
    label can be copied from an earlier example of the same input; other streams are untouched."""
    import re

    options = dict(n_streams=400, max_items=9, families=["sentiment_zh", "add"], languages=["zh"], relabel_prob=1.0,
                   flip_share=0.0)
    rows = streams(**options, repeat_prob=0.5, repeat_inputs=2)
    label = FIELD_LABELS["zh"]["input"]
    distinct = {id(row): len(set(re.findall(rf"{label}(.+)\n", row["text"]))) for row in rows}
    repeating = [row for row in rows if row["relabelled"] and row["n_items"] > 2
                 and distinct[id(row)] < row["n_items"]]
    assert all(distinct[id(row)] <= 2 for row in repeating)
    long_relabelled = [row for row in rows if row["relabelled"] and row["n_items"] > 2]
    assert 0.35 < len(repeating) / len(long_relabelled) < 0.8  # half repeat (a plain stream never does)
    assert all(distinct[id(row)] == row["n_items"] for row in rows if row["family"] == "add")


def test_log_uniform_item_counts_give_many_short_and_some_long_streams():
    counts = [row["n_items"] for row in streams(n_streams=3000, max_items=64, families=["add"],
                                                 item_counts="log_uniform")]
    assert min(counts) == 1 and max(counts) == 64
    short, long = sum(c <= 4 for c in counts), sum(c >= 32 for c in counts)
    assert short > 2 * long > 0.2 * len(counts) * 0.5  # ~37% up to 4 items, ~17% of 32 or more
    with pytest.raises(ValueError, match="item_counts must be uniform or log_uniform"):
        streams(item_counts="zipf")
