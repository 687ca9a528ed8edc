"""Stage `evaluate`: few-shot sweep of every model the pipeline produced, on every task and k.

Models: the base model (pretrain) and, when configured, the tuned ones (sft, dpo, ppo, grpo,
rloo; each result's `outputs["model"]`). Tasks: YAML files (alignflow/evaluation/spec.py).
Scoring is lm-evaluation-harness's (alignflow/evaluation/scoring.py). Output: the results table
(model x task x k with Wilson intervals) as CSV/JSON, per-sample records as JSONL, plots of
accuracy against k per model and a heatmap, and each model's results in lm-evaluation-harness's
layout (`lm_eval/<model>/results_*.json`, `samples_*.jsonl`), all logged to MLflow.
"""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pandas as pd

from alignflow.errors import DataError
from alignflow.evaluation.spec import load_task, task_files_digest_inputs
from alignflow.pipeline.stage import EvalResults, ModelRef, StageOutput, StageResult, StageRun, stage
from alignflow.schemas.config import PipelineConfig
from alignflow.schemas.stages.evaluate import EvaluateConfig
from alignflow.tracking.plots import accuracy_vs_k, heatmap
from alignflow.tracking.runs import log_table_input

if TYPE_CHECKING:
    from alignflow.evaluation.sweep import LoadedTask  # imports torch: not at CLI start-up

MODEL_STAGES = ("pretrain", "sft", "dpo", "ppo", "grpo", "rloo")


def task_paths(patterns: list[str]) -> list[Path]:
    """Task files named by the config (globs expanded, sorted, each once)."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matches:
            raise DataError(f"evaluate.tasks: {pattern!r} matches no file")
        paths += [Path(m) for m in matches if Path(m) not in paths]
    return paths


def heldout_percent(settings: EvaluateConfig, config: PipelineConfig) -> int:
    """The section's held-out share, else the demo corpus's, so `split: heldout` means inputs the model never saw."""
    if settings.heldout_percent is not None:
        return settings.heldout_percent
    return config.stages.pretrain.corpus.heldout_percent if config.stages.pretrain else 20


def evaluate_key(settings: EvaluateConfig, config: PipelineConfig) -> dict:
    """The section, the demo corpus's held-out share, and the content of every task file."""
    digests = {}
    for path in task_paths(settings.tasks):
        for file in task_files_digest_inputs(path, load_task(path)):
            digests[str(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return {**settings.model_dump(mode="json"), "heldout_percent": heldout_percent(settings, config), "task_files": digests}


def models_to_evaluate(upstream: dict[str, StageResult]) -> list[tuple[str, str]]:
    """(stage name, model folder or hub id) for every upstream stage that produced a model."""
    return [(name, upstream[name].outputs["model"]) for name in MODEL_STAGES
            if name in upstream and "model" in upstream[name].outputs]


def sweep_settings(settings: EvaluateConfig, held_out: int):
    from alignflow.evaluation.sweep import SweepSettings  # imports torch: not at CLI start-up

    return SweepSettings(shots=tuple(settings.shots), selection=settings.selection, ordering=settings.ordering,
                         draw=settings.draw, seed=settings.fewshot_seed, limit=settings.limit,
                         max_length=settings.max_length, batch_tokens=settings.batch_tokens,
                         prefix_cache=settings.prefix_cache, add_bos=settings.add_bos, embedder=settings.embedder,
                         heldout_percent=held_out, confidence=settings.confidence,
                         threads=settings.threads)


def select_tasks(tasks: list[LoadedTask], categories: list[str] | None, patterns: list[str]) -> list[LoadedTask]:
    """The loaded tasks in `categories` (all when unset); none left is a config mistake, said as one."""
    kept = [task for task in tasks if categories is None or task.spec.category in categories]
    if not kept:
        raise DataError(f"evaluate: no task of {patterns} is in the categories {categories}")
    return kept


def category_means(rows: list[dict]) -> dict[str, float]:
    """Mean accuracy per model, task category and k: the stage's headline metrics."""
    frame = pd.DataFrame(rows)
    means = frame.groupby(["model", "category", "k"])["accuracy"].mean()
    return {f"{model}.{category}.k{k}": float(value) for (model, category, k), value in means.items()}


def write_plots(frame: pd.DataFrame, out: Path) -> list[Path]:
    plots = []
    for model, part in frame.groupby("model", sort=False):
        series = {name: list(zip(g["k"], g["accuracy"], g["ci_low"], g["ci_high"], strict=True))
                  for name, g in part.groupby("task", sort=True)}
        chance = {name: float(g["chance"].iloc[0]) for name, g in part.groupby("task", sort=True)
                  if "chance" in g and pd.notna(g["chance"].iloc[0])}
        plots.append(accuracy_vs_k(out / f"accuracy_vs_k_{model}.png", f"{model}: accuracy against k", series,
                                   chance))
    grid = frame.pivot_table(index=["model", "task"], columns="k", values="accuracy", sort=False)
    plots.append(heatmap(out / "accuracy_heatmap.png", "accuracy (model / task x k)",
                         [f"{m} / {t}" for m, t in grid.index], [str(k) for k in grid.columns],
                         grid.values.tolist()))
    return plots


@stage("evaluate", result=EvalResults, key=evaluate_key, loads_models=True)
def evaluate(cfg: EvaluateConfig, pretrain: ModelRef, sft: ModelRef | None = None, dpo: ModelRef | None = None,
             ppo: ModelRef | None = None, grpo: ModelRef | None = None, rloo: ModelRef | None = None, *,
             run: StageRun) -> StageOutput:
    """Few-shot sweep (tasks x k) of every model; results table, curves, heatmap."""
    from alignflow.evaluation.harness_layout import write_harness_layout
    from alignflow.evaluation.sweep import evaluate_model, format_summary, load_model, load_tasks
    from alignflow.models.loading import stage_placement
    from alignflow.tracking.runs import log_models

    settings, out = cfg, run.out_dir
    held_out = heldout_percent(settings, run.config)
    tasks = select_tasks(load_tasks(task_paths(settings.tasks), heldout_percent=held_out, limit=settings.limit),
                         settings.categories, settings.tasks)
    for loaded in tasks:
        log_table_input(pd.DataFrame([doc.__dict__ for doc in loaded.docs]).astype(str), Path(loaded.path),
                        f"eval-{loaded.spec.name}", context="evaluation")
    sweep = sweep_settings(settings, held_out)
    rows: list[dict] = []
    (out / "samples").mkdir()
    seconds = 0.0
    placement = stage_placement(run.config)
    for name, model_path in models_to_evaluate(run.upstream):
        chat_template = run.config.chat_template if name == "pretrain" else None
        model, tokenizer = load_model(model_path, placement, chat_template)
        log_models(**{name: model})
        result = evaluate_model(model, tokenizer, tasks, sweep,
                                on_progress=lambda line, name=name: print(f"[evaluate] {name}: {line}", flush=True))
        seconds += result.seconds
        rows += [{"model": name, **row} for row in result.rows]
        with (out / "samples" / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for record in result.records:
                handle.write(json.dumps({"model": name, **record}, ensure_ascii=False) + "\n")
        write_harness_layout(out / "lm_eval" / name, result.records, {t.spec.name: t.spec for t in tasks},
                             {t.spec.name: t.path for t in tasks}, model_name=model_path, limit=settings.limit,
                             fewshot_seed=sweep.seed)
        for row in result.rows:
            mlflow.log_metric(f"{row['metric']}/{name}/{row['task']}", row["accuracy"], step=row["k"])
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "results.csv", index=False)
    (out / "results.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    mlflow.log_table(frame, artifact_file="results_table.json")
    for path in write_plots(frame, out):
        mlflow.log_artifact(str(path), artifact_path="plots")
    mlflow.log_artifact(str(out / "results.csv"))
    mlflow.log_artifacts(str(out / "samples"), artifact_path="samples")
    mlflow.log_artifacts(str(out / "lm_eval"), artifact_path="lm_eval")
    print("[evaluate] results (accuracy with Wilson interval):\n" + format_summary(rows, model_column=True),
          flush=True)
    metrics = {**category_means(rows), "documents_scored": float(frame["n"].sum()), "eval_seconds": seconds}
    return StageOutput(outputs={"results": str(out / "results.csv"), "samples": str(out / "samples"),
                                "lm_eval": str(out / "lm_eval")},
                       metrics=metrics, summary={"models": [m for m, _ in models_to_evaluate(run.upstream)],
                                                 "tasks": [t.spec.name for t in tasks]})
