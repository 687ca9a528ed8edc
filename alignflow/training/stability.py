"""Stability controls the trainer lacks: learning-rate cuts on a validation plateau, and a stop on
a non-finite loss that leaves the last good checkpoint in place."""

from __future__ import annotations

import math

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from alignflow.errors import NonFiniteLoss

__all__ = ["NonFiniteLoss", "ReduceLROnPlateau", "check_finite"]


def check_finite(loss: float, step: int, checkpoints: str) -> None:
    if not math.isfinite(loss):
        raise NonFiniteLoss(
            f"non-finite training loss ({loss}) at step {step}: training stopped. The last good checkpoint "
            f"is kept under {checkpoints} (nothing after the failing step was saved). Lower the learning "
            f"rate, enable clipping (max_grad_norm) or check the data, then rerun.")


class ReduceLROnPlateau(TrainerCallback, ExportableState):
    """Multiply the learning rate by `factor` after `patience` evaluations without a new best
    validation loss (better by more than `threshold`), never below `min_lr`.

    It scales the scheduler's base rates, so warm-up and decay keep their shape at the lower
    level; the scheduler's state (saved in checkpoints) carries the cut across a resume.
    """

    def __init__(self, factor: float, patience: int, threshold: float = 0.0, min_lr: float = 0.0) -> None:
        self.factor, self.patience, self.threshold, self.min_lr = factor, patience, threshold, min_lr
        self.best = math.inf
        self.bad_evaluations = 0
        self.reductions = 0

    def on_evaluate(self, args, state, control, metrics=None, lr_scheduler=None, optimizer=None, **kwargs):  # noqa: ANN001
        loss = (metrics or {}).get("eval_loss")
        if loss is None or lr_scheduler is None:
            return
        if loss < self.best - self.threshold:
            self.best, self.bad_evaluations = loss, 0
            return
        self.bad_evaluations += 1
        if self.bad_evaluations < self.patience:
            return
        self.bad_evaluations = 0
        scaled = [max(lr * self.factor, self.min_lr) for lr in lr_scheduler.base_lrs]
        if scaled == list(lr_scheduler.base_lrs):
            return
        ratios = [new / old if old else 1.0 for new, old in zip(scaled, lr_scheduler.base_lrs, strict=True)]
        lr_scheduler.base_lrs = scaled
        for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
            group["lr"] *= ratio
        self.reductions += 1

    def state(self) -> dict:
        return {"args": {"factor": self.factor, "patience": self.patience, "threshold": self.threshold,
                         "min_lr": self.min_lr},
                "attributes": {"best": self.best, "bad_evaluations": self.bad_evaluations,
                               "reductions": self.reductions}}
