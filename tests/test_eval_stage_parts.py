"""The evaluate stage's pure parts: config validation, task files in the cache key, model discovery."""

from __future__ import annotations

import pytest
from helpers import stage_result

from alignflow.pipeline.config import ConfigError, parse_config, section_digest
from alignflow.tasks.evaluate import category_means, evaluate, models_to_evaluate, task_paths


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
