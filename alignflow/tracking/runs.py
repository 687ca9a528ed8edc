"""MLflow tracking shared by every stage: store, parent and child runs, lineage tags.

Runs are created with the client and tagged explicitly (parent id, stage, cache key, upstream
runs), so lineage does not depend on which thread holds MLflow's "active run".
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from alignflow.schemas.config import PipelineConfig

TAG_STAGE = "alignflow.pipeline.stage"
TAG_CACHE_KEY = "alignflow.cache_key"
TAG_CACHED_FROM = "alignflow.cached_from"
TAG_UPSTREAM = "alignflow.upstream_runs"
TAG_PIPELINE = "alignflow.pipeline"


# mlflow.set_tracking_uri() writes $MLFLOW_TRACKING_URI, so read the user's value once, before
# any pipeline has set one; otherwise a config with tracking.uri would leak into later runs.
_USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def _restore_user_tracking_env() -> None:
    """Undo mlflow's write to $MLFLOW_TRACKING_URI so child processes see what the user set."""
    if _USER_TRACKING_URI is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = _USER_TRACKING_URI


def default_tracking_uri() -> str:
    return f"sqlite:///{Path('mlruns').resolve() / 'mlflow.db'}"


def resolve_tracking_uri(config: PipelineConfig) -> str:
    """Config first, then $MLFLOW_TRACKING_URI, then the project's SQLite store."""
    return config.tracking.uri or _USER_TRACKING_URI or default_tracking_uri()


def setup_tracking(config: PipelineConfig) -> str:
    """Point MLflow at the pipeline's store and return its experiment id (created if needed)."""
    uri = resolve_tracking_uri(config)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    _restore_user_tracking_env()
    name = config.tracking.experiment or config.name
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:"):
        # Keep artifacts beside the database instead of $CWD/mlruns/<id>.
        artifact_location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts" / name).resolve().as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)


def start_parent_run(experiment_id: str, config: PipelineConfig, config_path: str) -> str:
    run = MlflowClient().create_run(
        experiment_id,
        run_name=f"{config.name}-pipeline",
        tags={TAG_PIPELINE: config.name, "alignflow.config_path": str(config_path)},
    )
    return run.info.run_id


def start_stage_run(experiment_id: str, parent_run_id: str, stage: str, cache_key: str,
                    upstream_runs: dict[str, str], cached_from: str | None = None) -> str:
    tags = {
        MLFLOW_PARENT_RUN_ID: parent_run_id,
        MLFLOW_RUN_NAME: stage,
        TAG_STAGE: stage,
        TAG_CACHE_KEY: cache_key,
        TAG_UPSTREAM: ",".join(f"{name}:{run}" for name, run in sorted(upstream_runs.items())),
    }
    if cached_from:
        tags[TAG_CACHED_FROM] = cached_from
    return MlflowClient().create_run(experiment_id, run_name=stage, tags=tags).info.run_id


def end_run(run_id: str, ok: bool = True) -> None:
    MlflowClient().set_terminated(run_id, status="FINISHED" if ok else "FAILED")


def record_cache_hit(experiment_id: str, parent_run_id: str, result, upstream_runs: dict[str, str]) -> str:
    """A child run under the new parent that points at the run which computed the cached `result`
    (an alignflow.pipeline.stage.StageResult)."""
    client = MlflowClient()
    run_id = start_stage_run(experiment_id, parent_run_id, result.stage, result.cache_key,
                             upstream_runs, cached_from=result.mlflow_run_id)
    params = [mlflow.entities.Param(k, v[:6000]) for k, v in result.params.items()]
    now = int(time.time() * 1000)
    metrics = [mlflow.entities.Metric(k, float(v), now, 0) for k, v in result.metrics.items()]
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=params[start : start + 100])
    client.log_batch(run_id, metrics=metrics)
    end_run(run_id)
    return run_id


def log_table_input(frame: pd.DataFrame, source: Path, name: str, context: str) -> None:
    """Record a table the active run read or produced (name, digest, schema) for lineage."""
    with warnings.catch_warnings():
        # MLflow warns that a local path matches two equivalent source types, and about int columns.
        warnings.simplefilter("ignore", UserWarning)
        # MLflow's digest compares cell types, which pandas 3 cannot do on an empty string[pyarrow]
        # column (NotImplementedError): an empty table, e.g. no rejects, is logged as object columns.
        frame = frame.astype(object) if frame.empty else frame
        dataset = mlflow.data.from_pandas(frame, source=str(source), name=name)
        mlflow.log_input(dataset, context=context)


# The names the producing stages log their tables under: a reader logs the same name, so MLflow
# links the producer's output and the reader's input as one dataset (name and digest).
TABLE_NAMES = {"train": "instructions-train", "validation": "instructions-validation",
               "pairs_train": "preferences.pairs_train", "pairs_heldout": "preferences.pairs_heldout",
               "eval_prompts": "preferences.eval_prompts"}


def read_input(outputs: dict[str, str], key: str, context: str) -> pd.DataFrame:
    """Upstream table `outputs[key]`, read and logged as an input of the active run (dataset lineage
    in MLflow's own view: data -> SFT -> reward model -> PPO/DPO -> ...)."""
    from alignflow.data.tables import read_table

    frame = read_table(outputs[key])
    log_table_input(frame, Path(outputs[key]), TABLE_NAMES.get(key, key), context=context)
    return frame


def copy_metric_history(source_run_id: str, target_run_id: str, up_to_step: int) -> int:
    """Copy the source run's metrics logged at steps <= up_to_step into the target run.

    A resumed training run starts a new MLflow run; copying the interrupted run's curve up to the
    checkpoint keeps one value per step in the run the pipeline points at. Returns values copied.
    """
    from mlflow.entities import Metric

    client = mlflow.MlflowClient()
    copied: list[Metric] = []
    for key in client.get_run(source_run_id).data.metrics:
        for metric in client.get_metric_history(source_run_id, key):
            if metric.step <= up_to_step:
                copied.append(Metric(key, metric.value, metric.timestamp, metric.step))
    for start in range(0, len(copied), 1000):
        client.log_batch(target_run_id, metrics=copied[start:start + 1000])
    return len(copied)


def mark_interrupted(run_id: str) -> None:
    """A run whose process was killed stays RUNNING in MLflow; say what happened to it."""
    client = mlflow.MlflowClient()
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_tag(run_id, "alignflow.interrupted", "true")
        client.set_terminated(run_id, status="KILLED")


def log_models(**models) -> None:
    """Params naming where each model a stage uses lives: model.<role>.device / .dtype, from the
    loaded parameters (what the placement really gave), and how the tokenizer was prepared."""
    from alignflow.models.loading import model_placement

    params: dict[str, str] = {}
    for role, model in models.items():
        params |= {f"model.{role}.{key}": value for key, value in model_placement(model).items()}
    mlflow.log_params(params)


def log_tokenizer_setup(tokenizer) -> None:
    setup = getattr(tokenizer, "alignflow_setup", None)
    if setup is not None:
        mlflow.log_params(setup.params())
