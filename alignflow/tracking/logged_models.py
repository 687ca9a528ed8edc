"""Trained models as MLflow logged models, so MLflow's own tools find and load them.

A logged model is what the UI's Models column and model pages show, what the registry points at,
and what `mlflow.transformers.load_model` / `mlflow.pyfunc.load_model("models:/...")` load. Two
ways to log one (`tracking.log_weights`):

- `copy`: the transformers flavour, weights stored in the logged model (the store's only copy;
  the run does not also hold a `model/` folder); a reward model on alignflow's own score head
  (an architecture transformers has no sequence-classification class for) is the pyfunc below
  with its folder copied in, since the transformers flavour loads classes by their name in
  transformers;
- `reference`: a pyfunc model that records where the stage's model folder is and loads it from
  there, so a store of multi-GB checkpoints does not hold each one a second time.
"""

from __future__ import annotations

import re
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

import mlflow
from mlflow.entities import LoggedModel, LoggedModelInput

LogWeights = Literal["copy", "reference"]
CAUSAL_LM_TASK = "text-generation"
REWARD_MODEL_TASK = "text-classification"
# What `predict` generates unless told otherwise (`params=`): greedy, at most 64 new tokens.
GENERATION_DEFAULTS = {"max_new_tokens": 64, "do_sample": False}


def _signature(task: str):
    """Text in, text (or a score) out; generation settings overridable per call through `params`."""
    from mlflow.models import infer_signature

    if task == REWARD_MODEL_TASK:
        return infer_signature(["a prompt and its response"], [0.0])
    return infer_signature(["a prompt"], ["its continuation"], params=GENERATION_DEFAULTS)


def pip_requirements() -> list[str]:
    """The installed versions a logged model needs to load; given explicitly, because MLflow's own
    inference imports every optional module it guesses (torchvision, ...) and fails without them."""
    pins = []
    for package in ("torch", "transformers", "safetensors", "tokenizers", "accelerate"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


# MLflow warns, at class creation, that `predict` has no type hints; hints would replace the
# signature below (and drop its generation params), so the warning is recorded away, not heeded
# (record=True: MLflow's own filter inside sets "once", which an "ignore" filter would not survive).
with warnings.catch_warnings(record=True):

    class FolderPipeline(mlflow.pyfunc.PythonModel):
        """A transformers pipeline built from a model folder: the one named in the model config
        (`reference`), or the copy logged as the `folder` artifact (a reward model whose
        architecture the transformers flavour cannot name, alignflow.models.score_head)."""

        def load_context(self, context) -> None:
            from transformers import pipeline

            config = context.model_config
            self.task = config["task"]
            folder = context.artifacts.get("folder") or config["folder"]
            self.pipeline = pipeline(self.task, **_components(Path(folder), self.task))

        def predict(self, context, model_input, params=None):  # no type hints: they would replace the signature
            texts = list(model_input.iloc[:, 0]) if hasattr(model_input, "iloc") else list(model_input)
            if self.task == REWARD_MODEL_TASK:
                return [item["score"] for item in self.pipeline(texts, function_to_apply="none")]
            options = {**GENERATION_DEFAULTS, **(params or {})}  # prompt + continuation, as the transformers flavour
            return [out[0]["generated_text"] for out in self.pipeline(texts, **options)]


def _components(folder: Path, task: str) -> dict:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from alignflow.models.score_head import sequence_classifier_class

    if task == REWARD_MODEL_TASK:
        auto = sequence_classifier_class(AutoConfig.from_pretrained(folder))
    else:
        auto = AutoModelForCausalLM
    return {"model": auto.from_pretrained(folder, dtype="auto"), "tokenizer": AutoTokenizer.from_pretrained(folder)}


def transformers_flavour_loads(folder: Path, task: str) -> bool:
    """Whether `mlflow.transformers.load_model` could load the folder back: it names the model's
    class in transformers, which has none for alignflow's own score heads."""
    from transformers import AutoConfig

    from alignflow.models.score_head import has_native_score_head

    return task != REWARD_MODEL_TASK or has_native_score_head(AutoConfig.from_pretrained(folder))


def logged_model_name(stage: str) -> str:
    """MLflow's model names may not hold / : . % " ' (a sweep point is dpo-beta-0.5): dpo-beta-0_5."""
    return re.sub(r"[/:.%\"']", "_", stage)


def log_model_folder(folder: Path, *, task: str, weights: LogWeights, name: str, model_type: str):
    """Log the saved model folder as logged model `name` (the stage, so the UI's lists tell models
    apart) of the active run; `model_type` is the method (dpo for a sweep point). Returns MLflow's
    ModelInfo."""
    requirements, name = pip_requirements(), logged_model_name(name)
    if weights == "reference" or not transformers_flavour_loads(folder, task):
        copied = {"artifacts": {"folder": str(folder)}} if weights == "copy" else {}
        return mlflow.pyfunc.log_model(name=name, python_model=FolderPipeline(), pip_requirements=requirements,
                                       signature=_signature(task),
                                       model_config={"folder": str(folder.resolve()), "task": task},
                                       model_type=model_type, tags={"alignflow.weights": weights}, **copied)
    from huggingface_hub import ModelCard

    card_path = folder / "README.md"
    card = ModelCard(card_path.read_text(encoding="utf-8")) if card_path.exists() else None
    generation = {} if task == REWARD_MODEL_TASK else {"model_config": GENERATION_DEFAULTS,
                                                       "signature": _signature(task)}
    return mlflow.transformers.log_model(_components(folder, task), name=name, task=task, model_card=card,
                                         pip_requirements=requirements, model_type=model_type, **generation,
                                         tags={"alignflow.weights": "copy"})


def register_logged_model(name: str, info) -> int:
    """A new version of registered model `name` for the logged model (its run is the model's
    source run); returns its number."""
    client = mlflow.MlflowClient()
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description="Models produced by alignflow pipelines.")
    # mlflow.register_model also tags the logged model with its versions (the Models tab's column)
    return int(mlflow.register_model(info.model_uri, name).version)


def models_of_run(run_id: str, experiment_id: str, client: mlflow.MlflowClient | None = None) -> list[LoggedModel]:
    """The logged models run `run_id` of the experiment produced, oldest first."""
    found = (client or mlflow.MlflowClient()).search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}'")
    return sorted(found, key=lambda model: model.creation_timestamp)


def log_upstream_models(run_id: str, experiment_id: str, upstream_run_ids: list[str]) -> list[str]:
    """Log the logged models of the upstream runs (of the same experiment: the pipeline's) as
    inputs of run `run_id` (MLflow's model lineage); returns their ids. An upstream run without one
    (a table stage, a referenced hub model) adds nothing."""
    client = mlflow.MlflowClient()
    model_ids = [model.model_id for upstream in upstream_run_ids for model in models_of_run(upstream, experiment_id)]
    if model_ids:
        client.log_inputs(run_id, models=[LoggedModelInput(model_id) for model_id in model_ids])
    return model_ids
