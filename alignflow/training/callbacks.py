"""Trainer callbacks: metrics to MLflow once per logged step, progress a person can watch."""

from __future__ import annotations

import math
import time

import mlflow
from transformers import TrainerCallback

from alignflow.progress import StepProgress


class MlflowMetrics(TrainerCallback):
    """Log the trainer's numeric logs to the active MLflow run at the trainer's global step.

    With `include_num_input_tokens_seen` on, it adds `tokens_per_second` over each logging interval
    (the trainer's own figure averages over the whole session).
    """

    def __init__(self) -> None:
        self.history: dict[str, list[tuple[int, float]]] = {}
        self._tokens: tuple[float, float] | None = None  # (tokens seen, time) at the last log

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        self._tokens = (float(state.num_input_tokens_seen or 0), time.perf_counter())

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - transformers' signature
        logs = dict(logs or {})
        if "num_input_tokens_seen" in logs and self._tokens is not None and "loss" in logs:
            now, seen = time.perf_counter(), float(logs["num_input_tokens_seen"])
            if now > self._tokens[1]:
                logs["tokens_per_second"] = (seen - self._tokens[0]) / (now - self._tokens[1])
            self._tokens = (seen, now)
        numeric = {k: float(v) for k, v in logs.items()
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
