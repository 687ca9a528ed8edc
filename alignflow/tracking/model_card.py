"""Model cards: a README.md in every model folder saying where the model came from and how it did.

Hugging Face tools show a model folder's README.md as its card; alignflow writes lineage (the
stage, its MLflow run and cache key, the upstream runs and data digests) and final metrics there.
"""

from __future__ import annotations

import json
from pathlib import Path

from alignflow.tracking.logged_models import CAUSAL_LM_TASK, log_model_folder, register_logged_model


def _table(rows: list[tuple[str, str]]) -> str:
    return "| | |\n|---|---|\n" + "".join(f"| {key} | {value} |\n" for key, value in rows)


def write_model_card(folder: Path, *, title: str, summary: str, stage: str, run_id: str, base_model: str,
                     upstream: dict, metrics: dict[str, float], config: dict) -> Path:
    """Write `folder/README.md`; `upstream` maps stage names to their results (alignflow.pipeline.stage.StageResult)."""
    lineage = [("stage", stage), ("MLflow run", run_id), ("base model", base_model)]
    for name, result in sorted(upstream.items()):
        lineage.append((f"upstream `{name}`", f"run {result.mlflow_run_id}, output digest `{result.digest[:16]}`"))
    scores = [(key, f"{value:.6g}" if isinstance(value, float) else str(value)) for key, value in sorted(metrics.items())]
    text = (f"---\nlibrary_name: transformers\ntags: [alignflow, {stage}]\n---\n\n# {title}\n\n{summary}\n\n"
            f"## Lineage\n\n{_table(lineage)}\n## Metrics\n\n{_table(scores)}\n"
            f"## Configuration\n\n```json\n{json.dumps(config, ensure_ascii=False, indent=1)}\n```\n\n"
            "Load it with `AutoModelForCausalLM.from_pretrained(<this folder>)` (or the matching Auto class).\n")
    path = folder / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


def publish_model(run, model_dir: Path, *, title: str, summary: str, base_model: str, metrics: dict[str, float],
                  register: bool, task: str = CAUSAL_LM_TASK) -> dict[str, float]:
    """Give a saved model folder its card, log it as the stage run's MLflow model (`tracking.log_weights`)
    and register a new version of `<pipeline>-<stage>`; returns the metrics with `registry_version`
    when registered."""
    import mlflow

    from alignflow.distributed import is_main_process

    run_id = mlflow.active_run().info.run_id
    if not is_main_process():  # a launched job's other ranks saved no model: rank 0 publishes it
        return metrics
    write_model_card(model_dir, title=f"{run.config.name}: {title}", summary=summary, stage=run.name,
                     run_id=run_id, base_model=base_model, upstream=run.upstream, metrics=metrics,
                     config=run.section.model_dump(mode="json"))
    info = log_model_folder(model_dir, task=task, weights=run.config.tracking.log_weights, name=run.name,
                            model_type=run.method)
    if register:
        version = register_logged_model(f"{run.config.name}-{run.name}", info)
        metrics = {**metrics, "registry_version": float(version)}
    return metrics
