"""SFT stability: a non-finite loss stops training and keeps the last good checkpoint; a checkpoint
cut off mid-save is never resumed from. (The stage end to end: test_training_stages.py; a killed
run that resumes: test_resume.py.)"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from alignflow.schemas.stages.sft import SFTStageConfig
from alignflow.tasks.sft import trainer_arguments
from alignflow.training.checkpoints import resume_point
from alignflow.training.sft_trainer import AlignflowSFTTrainer
from alignflow.training.stability import NonFiniteLoss

pytestmark = pytest.mark.slow


class CorruptWeightsAt(TrainerCallback):
    """Turns the weights to NaN after a given step, as a diverging run would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        if state.global_step == self.step:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, tiny_llama):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    examples = [{"input_ids": [5, 6, 7, 8, 9], "labels": [-100, -100, 7, 8, 9]}] * 32
    settings = SFTStageConfig(max_steps=10, batch_size=2, save_steps=2, logging_steps=1, warmup_steps=0)
    checkpoints = tmp_path / "checkpoints"
    trainer = AlignflowSFTTrainer(model=model, args=trainer_arguments(settings, checkpoints, 0, False),
                                  train_dataset=Dataset.from_list(examples), processing_class=tokenizer,
                                  callbacks=[CorruptWeightsAt(5)])
    with pytest.raises(NonFiniteLoss, match=rf"at step 6.*{checkpoints}"):
        trainer.train()
    kept = sorted(p.name for p in checkpoints.glob("checkpoint-*"))
    assert kept[-1] == "checkpoint-4", "nothing after the last finite step was saved"
    folder, step = resume_point(checkpoints)
    assert step == 4
    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    assert all(torch.isfinite(p).all() for p in reloaded.parameters())


def test_resume_point_skips_a_checkpoint_cut_off_mid_save(tmp_path):
    for step, complete in ((10, True), (20, True), (30, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    folder, step = resume_point(tmp_path)
    assert (folder.name, step) == ("checkpoint-20", 20)
    assert not (tmp_path / "checkpoint-30").exists()
    assert resume_point(tmp_path / "none") == (None, 0)
