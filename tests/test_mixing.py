"""Multi-task mixing: rates by size, cap, temperature and weights; exact, logged stream counts."""

from __future__ import annotations

from collections import Counter

import pytest

from alignflow.training.mixing import MixSettings, apportion, mix_stream, task_rates


def test_examples_proportional_rates_follow_sizes():
    rates = task_rates({"a": 300, "b": 100}, MixSettings())
    assert rates == pytest.approx({"a": 0.75, "b": 0.25})


def test_cap_limits_a_large_task():
    rates = task_rates({"a": 10_000, "b": 100, "c": 50}, MixSettings(cap=100))
    assert rates == pytest.approx({"a": 100 / 250, "b": 100 / 250, "c": 50 / 250})


def test_temperature_flattens_the_mix():
    sizes = {"a": 400, "b": 100}
    t1, t2 = task_rates(sizes, MixSettings()), task_rates(sizes, MixSettings(temperature=2.0))
    assert t2 == pytest.approx({"a": 20 / 30, "b": 10 / 30})  # sqrt(400)=20, sqrt(100)=10
    assert t2["b"] > t1["b"]
    assert task_rates(sizes, MixSettings(temperature=1e6))["b"] == pytest.approx(0.5, abs=1e-4)


def test_task_weight_multiplies_its_rate_and_zero_removes_it():
    assert task_rates({"a": 100, "b": 100}, MixSettings(task_weights={"a": 3.0})) == pytest.approx(
        {"a": 0.75, "b": 0.25})
    assert task_rates({"a": 100, "b": 100}, MixSettings(task_weights={"b": 0}))["b"] == 0
    with pytest.raises(ValueError, match="weight 0"):
        task_rates({"a": 1}, MixSettings(task_weights={"a": 0}))


def test_apportion_sums_exactly_and_rounds_by_largest_remainder():
    counts = apportion(10, {"a": 0.55, "b": 0.25, "c": 0.2})
    assert sum(counts.values()) == 10
    assert counts == {"a": 6, "b": 2, "c": 2} or counts == {"a": 5, "b": 3, "c": 2}
    assert apportion(7, {"x": 1 / 3, "y": 1 / 3, "z": 1 / 3}) in (
        {"x": 3, "y": 2, "z": 2}, {"x": 2, "y": 3, "z": 2}, {"x": 2, "y": 2, "z": 3})


def test_stream_has_the_requested_length_and_mix():
    tasks = ["big"] * 90 + ["small"] * 10
    sources = ["template:x"] * 100
    stream, shares = mix_stream(tasks, sources, 200, MixSettings(cap=10), seed=0)
    assert len(stream) == 200
    drawn = Counter(tasks[i] for i in stream)
    assert drawn == {"big": 100, "small": 100}  # capped at 10 rows each: an even mix
    by_task = {s.task: s for s in shares}
    assert by_task["small"].epochs == pytest.approx(10.0) and by_task["big"].available == 90
    assert sum(s.drawn for s in shares) == 200


def test_a_row_repeats_only_after_its_task_is_used_up():
    tasks = ["t"] * 5
    stream, _ = mix_stream(tasks, ["seed:a"] * 5, 12, MixSettings(), seed=3)
    counts = Counter(stream)
    assert set(counts) == set(range(5)) and max(counts.values()) - min(counts.values()) <= 1


def test_source_weights_change_which_rows_are_drawn():
    tasks = ["t"] * 20
    sources = ["seed:a"] * 10 + ["self_instruct:b"] * 10
    stream, _ = mix_stream(tasks, sources, 10, MixSettings(source_weights={"self_instruct": 0}), seed=0)
    assert all(i < 10 for i in stream)


def test_stream_is_reproducible_from_the_seed():
    tasks = ["a"] * 7 + ["b"] * 3
    one = mix_stream(tasks, ["s:x"] * 10, 30, MixSettings(), seed=1)[0]
    assert one == mix_stream(tasks, ["s:x"] * 10, 30, MixSettings(), seed=1)[0]
    assert one != mix_stream(tasks, ["s:x"] * 10, 30, MixSettings(), seed=2)[0]
