"""Trainer callbacks: metrics to MLflow once per logged step, progress a person can watch."""

from __future__ import annotations

import math
import time

import mlflow
from transformers import TrainerCallback

from alignflow.progress import StepProgress


class MlflowMetrics(TrainerCallback):
    """Log the trainer's numeric logs to the active MLflow run at the trainer's global step.

    Values are buffered and written in one batch every `flush_every` logging events, before every
    checkpoint and at the end: each write to MLflow's SQLite store costs tens of milliseconds,
    which per log would slow a small model by 10-15% (bench/sft_overhead.py). With
    `include_num_input_tokens_seen` on, it adds `tokens_per_second` over each logging interval
    (the trainer's own figure averages over the whole session).
    """

    def __init__(self, flush_every: int = 10) -> None:
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.flush_every = flush_every
        self._pending: list = []
        self._events = 0
        self._run_id: str | None = None
        self._tokens: tuple[float, float] | None = None  # (tokens seen, time) at the last log

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        run = mlflow.active_run()
        self._run_id = run.info.run_id if run else None
        self._tokens = (float(state.num_input_tokens_seen or 0), time.perf_counter())

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - transformers' signature
        from mlflow.entities import Metric

        logs = dict(logs or {})
        if "num_input_tokens_seen" in logs and self._tokens is not None and "loss" in logs:
            now, seen = time.perf_counter(), float(logs["num_input_tokens_seen"])
            if now > self._tokens[1]:
                logs["tokens_per_second"] = (seen - self._tokens[0]) / (now - self._tokens[1])
            self._tokens = (seen, now)
        numeric = {k: float(v) for k, v in logs.items()
                   if isinstance(v, int | float) and math.isfinite(float(v)) and k != "epoch"}
        stamp = int(time.time() * 1000)
        for key, value in numeric.items():
            self.history.setdefault(key, []).append((state.global_step, value))
            self._pending.append(Metric(key, value, stamp, state.global_step))
        self._events += 1
        if self._events % self.flush_every == 0 or control.should_save:  # a checkpoint follows: store its curve
            self.flush()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if control.should_save:  # everything logged before a checkpoint is stored before it exists
            self.flush()

    def on_evaluate(self, args, state, control, **kwargs):  # noqa: ANN001
        self.flush()

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self.flush()

    def flush(self) -> None:
        if self._pending and self._run_id:
            client = mlflow.MlflowClient()
            for start in range(0, len(self._pending), 1000):
                client.log_batch(self._run_id, metrics=self._pending[start:start + 1000])
        self._pending = []


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
