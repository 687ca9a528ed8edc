"""The end-to-end flow: every configured stage, in order, each cached by Prefect."""

from __future__ import annotations

from prefect import flow

from alignflow.config import load_config
from alignflow.runner import StageReport, run_pipeline
from alignflow.tasks import PIPELINE


@flow(name="alignflow-pipeline", log_prints=False)
def pipeline(config_path: str, only: str | None = None, from_stage: str | None = None,
             refresh: tuple[str, ...] = ()) -> list[StageReport]:
    """Run the pipeline declared in `config_path` (see configs/*.yaml)."""
    config = load_config(config_path)
    return run_pipeline(config, config_path, PIPELINE, only=only, from_stage=from_stage, refresh=refresh)
