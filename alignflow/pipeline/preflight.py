"""Checks `alignflow run` makes before any flow run starts, so that a mistake in the config's files
is one line now rather than a failed stage minutes later."""

from __future__ import annotations

from pathlib import Path

from alignflow.errors import DataError
from alignflow.schemas.config import PipelineConfig

# Endings the build stage reads as local files; anything else is a `datasets` name.
LOCAL_ENDINGS = {".jsonl", ".json", ".csv", ".tsv", ".parquet"}


def check_pipeline(config: PipelineConfig) -> None:
    """The configured device and dtype exist here, the base model and the preference judge (folder,
    weights, config, tokenizer) can be loaded, and the build stage's input files exist."""
    if (config.execution.device, config.execution.dtype) != ("auto", "auto"):
        from alignflow.models.loading import resolve_placement

        resolve_placement(config.execution.device, config.execution.dtype)  # ModelLoadError: one line
    if config.chat_template:
        from alignflow.models.loading import template_text

        template_text(config.chat_template)  # a missing template file: one line
    accelerate_config = config.execution.accelerate_config
    if accelerate_config and not Path(accelerate_config).is_file():
        raise DataError(f"execution.accelerate_config: {accelerate_config}: no such file")
    if config.execution.task_runner == "dask" and config.stages.preferences is not None:
        from alignflow.pipeline.fanout import task_runner

        task_runner(config.execution)  # prefect-dask missing: one line, before any stage runs
    from alignflow.models.loading import check_causal_lm  # (transformers only inside it)

    if config.base_model:
        check_causal_lm(config.base_model, config.base_model_revision)
    preferences = config.stages.preferences
    if preferences is not None and preferences.annotator == "judge" and preferences.judge.model:
        check_causal_lm(preferences.judge.model, preferences.judge.revision, what="stages.preferences.judge.model")
    build = config.stages.build
    if build is not None:
        files = [("build.seeds", s) for s in build.seeds]
        files += [(f"build.datasets[{i}].path", d.path) for i, d in enumerate(build.datasets)
                  if Path(d.path).suffix.lower() in LOCAL_ENDINGS]
        files += [(f"build.datasets[{i}].templates", d.templates) for i, d in enumerate(build.datasets)]
        for key, file in files:
            if not Path(file).is_file():
                raise DataError(f"{key}: {file}: no such file")
