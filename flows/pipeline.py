"""The end-to-end flow: every configured stage, each cached by Prefect; stages whose inputs are ready
run side by side when `execution.parallel_stages` > 1 (DPO beside reward model -> PPO)."""

from __future__ import annotations

from prefect import flow

from alignflow.config import load_config
from alignflow.runner import PipelineRun, run_pipeline
from alignflow.tasks import PIPELINE


@flow(name="alignflow-pipeline", log_prints=False)
def pipeline(config_path: str, only: str | None = None, from_stage: str | None = None,
             refresh: tuple[str, ...] = ()) -> PipelineRun:
    """Run the pipeline declared in `config_path` (see configs/*.yaml)."""
    config = load_config(config_path)
    return run_pipeline(config, config_path, PIPELINE, only=only, from_stage=from_stage, refresh=refresh)
