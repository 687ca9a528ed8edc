"""The evaluate stage's pure parts: config validation, task files in the cache key, model discovery."""

from __future__ import annotations

import pytest
from helpers import stage_result

from alignflow.pipeline.config import ConfigError, parse_config, section_digest
from alignflow.tasks.evaluate import category_means, evaluate, models_to_evaluate, select_tasks, task_paths


def config(project, **evaluate):
    return parse_config({"name": "t", "stages": {"pretrain": {"corpus": {"heldout_percent": 30}},
                                                 "evaluate": evaluate}})


def test_evaluate_config_rejects_bad_shots_and_unknown_keys(project):
    with pytest.raises(ConfigError, match="stages.evaluate: shots must be distinct"):
        config(project, shots=[0, 1, 1])
    with pytest.raises(ConfigError, match="stages.evaluate.shot"):
        config(project, shot=[0])
    with pytest.raises(ConfigError, match="stages.evaluate.selection"):
        config(project, selection="nearest")


def test_section_carries_task_file_digests_and_the_corpus_split(project):
    settings = config(project, tasks=["data/eval/tasks/recognize_*.yaml"])
    section = evaluate.key(settings.stages.evaluate, settings)
    assert section["heldout_percent"] == 30
    assert sorted(section["task_files"]) == sorted(str(p) for p in task_paths(["data/eval/tasks/recognize_*.yaml"]))
    before = section_digest(section)
    task = project / "data" / "eval" / "tasks" / "recognize_word.yaml"
    task.write_text(task.read_text() + "\n# edited\n")
    assert section_digest(evaluate.key(settings.stages.evaluate, settings)) != before  # an edited task file: a new key
    with pytest.raises(ValueError, match="matches no file"):
        task_paths(["data/eval/none_*.yaml"])


def test_every_upstream_model_is_evaluated_in_pipeline_order():
    upstream = {name: stage_result(name, outputs) for name, outputs in [
        ("dpo", {"model": "/m/dpo"}), ("pretrain", {"model": "/m/base"}), ("sft", {"model": "org/sft-hub-id"}),
        ("validate", {"train": "x"})]}
    assert models_to_evaluate(upstream) == [("pretrain", "/m/base"), ("sft", "org/sft-hub-id"), ("dpo", "/m/dpo")]
    assert evaluate.inputs == ("pretrain", "sft", "dpo", "ppo", "grpo", "rloo")
    assert evaluate.optional_inputs == ("sft", "dpo", "ppo", "grpo", "rloo")


def test_category_means():
    rows = [{"model": "pretrain", "category": "recognition", "k": 0, "accuracy": 0.2},
            {"model": "pretrain", "category": "recognition", "k": 0, "accuracy": 0.6},
            {"model": "pretrain", "category": "learning", "k": 4, "accuracy": 0.5}]
    assert category_means(rows) == {"pretrain.learning.k4": 0.5, "pretrain.recognition.k0": pytest.approx(0.4)}


def test_the_held_out_share_is_the_sections_else_the_pretrain_corpus(project):
    assert evaluate.key(config(project).stages.evaluate, config(project))["heldout_percent"] == 30
    own = config(project, heldout_percent=10)
    assert evaluate.key(own.stages.evaluate, own)["heldout_percent"] == 10


def test_each_pretrain_sweep_point_is_scored_on_its_own_held_out_inputs(project):
    from alignflow.flows.pipeline import scaling_points

    cfg = parse_config({"name": "t", "stages": {"pretrain": {"corpus": {"heldout_percent": 30}}, "evaluate": {}},
                        "sweeps": {"pretrain": {"corpus.heldout_percent": [10], "model.num_hidden_layers": [1]}}})
    points = {label: (source, section) for label, source, section in scaling_points(cfg)}
    assert sorted(points) == ["corpus.heldout_percent-10", "model.num_hidden_layers-1"]
    source, section = points["corpus.heldout_percent-10"]
    assert source.pretrain.corpus.heldout_percent == 10
    assert evaluate.key(section, cfg)["heldout_percent"] == 10  # not the configured base model's 30
    assert set(section.categories) == {"recognition", "learning"}
    assert evaluate.key(points["model.num_hidden_layers-1"][1], cfg)["heldout_percent"] == 30


def test_no_task_in_the_categories_is_a_data_error(project):
    from alignflow.errors import DataError
    from alignflow.evaluation.sweep import load_tasks

    patterns = ["data/eval/tasks/recognize_word.yaml"]
    loaded = load_tasks(task_paths(patterns), limit=2)
    assert select_tasks(loaded, None, patterns) == loaded
    assert select_tasks(loaded, ["learning", "recognition"], patterns) == loaded
    with pytest.raises(DataError, match=r"no task of \['data/eval/tasks/recognize_word.yaml'\] is in the categories"):
        select_tasks(loaded, ["preference"], patterns)
