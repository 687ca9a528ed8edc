"""Trainer callbacks: metrics to MLflow once per logged step, progress a person can watch."""

from __future__ import annotations

import math

import mlflow
from transformers import TrainerCallback

from alignflow.progress import StepProgress


class MlflowMetrics(TrainerCallback):
    """Log the trainer's numeric logs to the active MLflow run at the trainer's global step."""

    def __init__(self) -> None:
        self.history: dict[str, list[tuple[int, float]]] = {}

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - transformers' signature
        numeric = {k: float(v) for k, v in (logs or {}).items()
                   if isinstance(v, int | float) and math.isfinite(float(v)) and k != "epoch"}
        if numeric:
            mlflow.log_metrics(numeric, step=state.global_step)
            for key, value in numeric.items():
                self.history.setdefault(key, []).append((state.global_step, value))


class ProgressBar(TrainerCallback):
    """One bar per training run with the latest loss, instead of the trainer's own bars."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.progress: StepProgress | None = None

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        self.progress = StepProgress(self.description, total=state.max_steps)
        self.progress.update(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if self.progress and logs and "loss" in logs:
            self.progress.update(state.global_step, loss=float(logs["loss"]))

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.progress:
            self.progress.update(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.progress:
            self.progress.__exit__()
            self.progress = None
