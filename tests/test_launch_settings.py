"""The launched job's command line and size, and the accelerate configs shipped as examples (the GPU
side of `execution.launcher: accelerate`, checked without a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from helpers import REPO

from alignflow.pipeline.launcher import job_processes, launch_command
from alignflow.schemas.config import PipelineConfig

EXAMPLES = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))


def config(**execution) -> PipelineConfig:
    return PipelineConfig.model_validate({"name": "x", "base_model": "m", "execution": {"launcher": "accelerate",
                                                                                          **execution}})


def test_cpu_jobs_are_torchrun_per_machine_and_gpu_jobs_accelerate_over_all_machines(tmp_path):
    cpu = launch_command(config(num_processes=4, num_machines=2), tmp_path / "r.json", on_gpu=False)
    assert cpu[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=4" in cpu and "--nnodes=2" in cpu
    gpu = launch_command(config(num_processes=4, num_machines=2), tmp_path / "r.json", on_gpu=True)
    assert gpu[1:3] == ["-m", "accelerate.commands.launch"] and "--multi_gpu" in gpu
    assert gpu[gpu.index("--num_processes") + 1] == "8" and gpu[gpu.index("--num_machines") + 1] == "2"
    assert gpu[-3:] == ["-m", "alignflow.pipeline.launched", str(tmp_path / "r.json")]
    one = launch_command(config(num_processes=1), tmp_path / "r.json", on_gpu=True)
    assert "--multi_gpu" not in one
    assert job_processes(config(num_processes=4, num_machines=2)) == 8


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_example_accelerate_configs_are_accelerate_configs_and_size_the_job(example: Path, tmp_path):
    settings = load_config_from_file(str(example))
    assert settings.use_cpu is False and settings.num_processes >= 8
    if "fsdp" in example.stem:
        assert settings.distributed_type.value == "FSDP" and settings.fsdp_config["fsdp_version"] == 2
        assert settings.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT", "the main process saves it whole"
    launched = config(accelerate_config=str(example), num_processes=2)
    assert job_processes(launched) == settings.num_processes, "the file's values win"
    command = launch_command(launched, tmp_path / "r.json", on_gpu=True)
    assert command[command.index("--config_file") + 1] == str(example) and "--num_processes" not in command


def test_examples_exist():
    assert {p.stem for p in EXAMPLES} >= {"ddp_8gpu", "fsdp_8gpu", "fsdp_2x8gpu"}
