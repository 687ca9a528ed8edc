"""Stability controls: plateau learning-rate cuts and the non-finite loss stop."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments
from transformers.optimization import get_cosine_schedule_with_warmup

from alignflow.training.stability import NonFiniteLoss, ReduceLROnPlateau, check_finite


def _optimizer_and_scheduler(lr: float = 0.1):
    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([parameter], lr=lr)
    return optimizer, get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=0, num_training_steps=100)


def _evaluate(callback, loss, optimizer, scheduler):
    callback.on_evaluate(TrainingArguments(output_dir="/tmp/unused", report_to="none"), TrainerState(),
                         TrainerControl(), metrics={"eval_loss": loss}, lr_scheduler=scheduler, optimizer=optimizer)


def test_plateau_cuts_the_learning_rate_after_patience_evaluations():
    optimizer, scheduler = _optimizer_and_scheduler()
    callback = ReduceLROnPlateau(factor=0.5, patience=2)
    for loss in (1.0, 0.9, 0.95, 0.92):  # best 0.9, then two evaluations without improvement
        _evaluate(callback, loss, optimizer, scheduler)
    assert callback.reductions == 1
    assert scheduler.base_lrs == [pytest.approx(0.05)]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    optimizer.step()
    scheduler.step()  # the schedule keeps its shape at the lower level
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi / 100)))


def test_plateau_waits_while_the_loss_improves_and_respects_min_lr():
    optimizer, scheduler = _optimizer_and_scheduler()
    callback = ReduceLROnPlateau(factor=0.1, patience=1, min_lr=0.05)
    for loss in (1.0, 0.8, 0.6):
        _evaluate(callback, loss, optimizer, scheduler)
    assert callback.reductions == 0
    for loss in (0.7, 0.7, 0.7):
        _evaluate(callback, loss, optimizer, scheduler)
    assert callback.reductions == 1 and scheduler.base_lrs == [pytest.approx(0.05)]


def test_plateau_state_survives_a_checkpoint():
    callback = ReduceLROnPlateau(factor=0.5, patience=3)
    callback.best, callback.bad_evaluations, callback.reductions = 0.4, 2, 1
    state = callback.state()
    restored = ReduceLROnPlateau(**state["args"])
    for key, value in state["attributes"].items():
        setattr(restored, key, value)
    assert (restored.best, restored.bad_evaluations, restored.reductions, restored.patience) == (0.4, 2, 1, 3)


@pytest.mark.parametrize("loss", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_loss_stops_with_a_clear_message(loss):
    with pytest.raises(NonFiniteLoss, match=r"non-finite training loss .* at step 7.*last good checkpoint.*/ck"):
        check_finite(loss, 7, "/ck")
    check_finite(1.5, 7, "/ck")
