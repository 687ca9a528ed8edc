"""The sft stage end to end on the smoke pipeline: LoRA with mixing, an adaptive curriculum and
plateau cuts; curves, model card and registry entry in MLflow; cache invalidation by an SFT
hyperparameter; a killed run that resumes from its checkpoint; a non-finite loss stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_project, run_cli
from datasets import Dataset
from mlflow.tracking import MlflowClient
from transformers import AutoModelForCausalLM, TrainerCallback

from alignflow.demo.model import build_llama
from alignflow.demo.tokenizer import train_tokenizer
from alignflow.schemas.config import SFTStageConfig
from alignflow.tasks.sft import trainer_arguments
from alignflow.tracking import TAG_STAGE
from alignflow.training.checkpoints import resume_point
from alignflow.training.sft_trainer import AlignflowSFTTrainer
from alignflow.training.stability import NonFiniteLoss

pytestmark = pytest.mark.slow


def write_config(folder: Path, name: str, sft: dict, *, evaluate: bool = False, **build) -> str:
    config = yaml.safe_load((folder / "configs" / "smoke.yaml").read_text(encoding="utf-8"))
    config["stages"]["sft"].update(sft)
    config["stages"]["build"].update(build)
    if not evaluate:
        del config["stages"]["evaluate"]
    path = folder / "configs" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return str(path.relative_to(folder))


def client(folder: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{folder}/mlruns/mlflow.db")


def sft_runs(folder: Path):
    mlflow = client(folder)
    experiment = mlflow.get_experiment_by_name("smoke")
    return mlflow.search_runs([experiment.experiment_id], f"tags.`{TAG_STAGE}` = 'sft'",
                              order_by=["attributes.start_time ASC"])


def steps_of(folder: Path, run_id: str, key: str) -> list[int]:
    return [m.step for m in client(folder).get_metric_history(run_id, key)]


def statuses(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] in ("computed", "cached"):
            found[parts[0]] = parts[1]
    return found


def test_a_killed_sft_run_resumes_from_its_last_checkpoint(tmp_path):
    folder = make_project(tmp_path / "project")
    config = write_config(folder, "resume", {"max_steps": 80, "logging_steps": 1, "eval_steps": 100,
                                             "save_steps": 10})
    env = {**os.environ, "PREFECT_HOME": str(folder / ".prefect"), "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "killed-run.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "alignflow.cli", "run", config], cwd=folder, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    checkpoints = folder / ".alignflow" / "checkpoints" / "sft"
    deadline = time.time() + 400
    while time.time() < deadline and process.poll() is None:
        if any(p.name in ("checkpoint-20", "checkpoint-30") and (p / "trainer_state.json").is_file()
               for p in checkpoints.glob("*/checkpoint-*")):
            break  # a complete checkpoint at step 20 or 30 (a folder is written before its state file)
        time.sleep(0.05)
    assert process.poll() is None, (tmp_path / "killed-run.log").read_text()[-3000:]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed = sft_runs(folder)[-1]
    killed_steps = steps_of(folder, killed.info.run_id, "loss")
    assert 20 <= max(killed_steps) < 80

    result = run_cli(["run", config], folder, folder / ".prefect")
    assert result.returncode == 0, result.stdout + result.stderr
    assert statuses(result.stdout)["sft"] == "computed" and statuses(result.stdout)["validate"] == "cached"
    resumed = sft_runs(folder)[-1]
    start = resumed.data.metrics["resumed_from_step"]
    assert start >= 20 and start % 10 == 0, "resumed from a saved checkpoint, not step 0"
    assert resumed.data.metrics["global_step"] == 80
    assert steps_of(folder, resumed.info.run_id, "loss") == list(range(1, 81)), "one value per step"
    assert client(folder).get_run(killed.info.run_id).info.status == "KILLED"
    assert not any(checkpoints.glob("*/checkpoint-*")), "a finished run deletes its checkpoints"


class CorruptWeightsAt(TrainerCallback):
    """Turns the weights to NaN after a given step, as a diverging run would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        if state.global_step == self.step:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    tokenizer = train_tokenizer(["输入：apple\n输出：苹果", "Input: two\nOutput: 2"] * 20, 300)
    model = build_llama(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64, dropout=0.0,
                        seed=0)
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
