"""Trained models as MLflow logged models: loadable by MLflow's own loaders, weights stored once
(`copy`) or not at all (`reference`), registered, and linked as inputs of the runs that read them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    LlamaForSequenceClassification,
)

from alignflow.tracking.logged_models import (
    REWARD_MODEL_TASK,
    log_model_folder,
    log_upstream_models,
    models_of_run,
    register_logged_model,
)


@pytest.fixture
def store(tmp_path):
    """A fresh SQLite store with its own artifact folder, as the pipeline's."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("logged-models", artifact_location=str(tmp_path / "artifacts"))
    mlflow.set_experiment(experiment_id=experiment)
    yield tmp_path
    mlflow.set_tracking_uri(None)


def stored_files(root: Path, model_id: str) -> set[str]:
    folder = next(root.glob(f"artifacts/**/{model_id}/artifacts"))
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def first_weight(model) -> torch.Tensor:
    return next(model.parameters()).detach().float()


def test_copy_loads_back_with_mlflow_transformers_and_the_registry(store, tiny_llama, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama, folder)
    (folder / "README.md").write_text("# a card\n\nlineage here\n", encoding="utf-8")
    with mlflow.start_run() as run:
        info = log_model_folder(folder, task="text-generation", weights="copy", name="sft", model_type="sft")
    version = register_logged_model("unit-sft", info)
    versions = json.loads(mlflow.get_logged_model(info.model_id).tags["mlflow.modelVersions"])
    assert versions == [{"name": "unit-sft", "version": version}]  # what the UI's Models tab shows
    assert [m.model_id for m in models_of_run(run.info.run_id, run.info.experiment_id)] == [info.model_id]
    files = stored_files(store, info.model_id)
    assert "model/model.safetensors" in files and "MLmodel" in files
    assert mlflow.MlflowClient().list_artifacts(run.info.run_id) == []  # the run holds no second copy
    pipe = mlflow.transformers.load_model(f"models:/unit-sft/{version}")
    assert torch.equal(first_weight(pipe.model), first_weight(AutoModelForCausalLM.from_pretrained(folder)))
    assert "lineage here" in (next(store.glob(f"artifacts/**/{info.model_id}/artifacts")) / "model_card.md").read_text()
    answers = mlflow.pyfunc.load_model(info.model_uri).predict(["hello"], params={"max_new_tokens": 3})
    assert len(answers) == 1 and isinstance(answers[0], str)


def test_reference_stores_no_weights_and_loads_the_folder(store, tiny_llama, tmp_path):
    folder = tmp_path / "reward"
    torch.manual_seed(1)
    config = AutoModelForCausalLM.from_pretrained(tiny_llama).config
    config.num_labels, config.pad_token_id = 1, config.eos_token_id
    reward = LlamaForSequenceClassification(config)
    reward.save_pretrained(folder)
    shutil.copy(tiny_llama / "tokenizer.json", folder)
    shutil.copy(tiny_llama / "tokenizer_config.json", folder)
    with mlflow.start_run():
        info = log_model_folder(folder, task=REWARD_MODEL_TASK, weights="reference", name="reward_model", model_type="reward_model")
    assert not any(name.endswith(".safetensors") for name in stored_files(store, info.model_id))
    scores = mlflow.pyfunc.load_model(info.model_uri).predict(["hello", "a longer text here"])
    loaded = AutoModelForSequenceClassification.from_pretrained(folder)
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(folder)("a longer text here", return_tensors="pt")
    with torch.no_grad():
        expected = loaded(**tokens).logits[0, 0].item()
    assert len(scores) == 2 and scores[1] == pytest.approx(expected, abs=1e-4)


def test_upstream_models_become_inputs_of_the_reading_run(store, tiny_llama, tmp_path):
    with mlflow.start_run() as producer:
        info = log_model_folder(tiny_llama, task="text-generation", weights="reference", name="dpo-beta-0.5",
                                model_type="dpo")
    assert mlflow.get_logged_model(info.model_id).name == "dpo-beta-0_5"
    with mlflow.start_run() as table_stage:
        pass
    with mlflow.start_run() as reader:
        upstream = [producer.info.run_id, table_stage.info.run_id]
        assert log_upstream_models(reader.info.run_id, reader.info.experiment_id, upstream) == [info.model_id]
    inputs = mlflow.MlflowClient().get_run(reader.info.run_id).inputs.model_inputs
    assert [item.model_id for item in inputs] == [info.model_id]


def test_copy_and_reference_generate_the_same_greedy_text(store, tiny_llama):
    answers = {}
    for weights in ("copy", "reference"):
        with mlflow.start_run():
            info = log_model_folder(tiny_llama, task="text-generation", weights=weights, name="sft", model_type="sft")
        answers[weights] = mlflow.pyfunc.load_model(info.model_uri).predict(["任务：", "hello"],
                                                                             params={"max_new_tokens": 5})
    assert answers["copy"] == answers["reference"]
    assert all(text.startswith(prompt) and len(text) > len(prompt)
               for prompt, text in zip(["任务：", "hello"], answers["copy"], strict=True))


def test_a_reward_model_on_alignflows_score_head_loads_back_copied_or_referenced(store, tmp_path):
    """The transformers flavour names a model's class in transformers; an LFM2 reward model's class
    is alignflow's (alignflow.models.score_head), so `copy` logs the pyfunc with the folder inside."""
    from alignflow.demo.foreign import build_foreign_model
    from alignflow.models.loading import resolve_placement, reward_model_and_tokenizer

    base = build_foreign_model("lfm2_hybrid", tmp_path / "base", ["hello world", "a longer text here", "你好"] * 20)
    reward, tokenizer = reward_model_and_tokenizer(str(base), resolve_placement("cpu"))
    with torch.no_grad():
        reward.score.weight.normal_()
        expected = [reward(**tokenizer(text, return_tensors="pt")).logits[0, 0].item()
                    for text in ("hello", "a longer text here")]
    folder = tmp_path / "reward"
    reward.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    uris = {}
    for weights in ("reference", "copy"):
        with mlflow.start_run():
            info = log_model_folder(folder, task=REWARD_MODEL_TASK, weights=weights, name="reward_model",
                                    model_type="reward_model")
        holds_weights = any(name.endswith(".safetensors") for name in stored_files(store, info.model_id))
        assert holds_weights == (weights == "copy")
        assert mlflow.get_logged_model(info.model_id).tags["alignflow.weights"] == weights
        uris[weights] = info.model_uri
    assert mlflow.pyfunc.load_model(uris["reference"]).predict(["hello", "a longer text here"]) == \
        pytest.approx(expected, abs=1e-4)
    shutil.rmtree(folder)  # the copy needs nothing outside the store
    assert mlflow.pyfunc.load_model(uris["copy"]).predict(["hello", "a longer text here"]) == \
        pytest.approx(expected, abs=1e-4)
