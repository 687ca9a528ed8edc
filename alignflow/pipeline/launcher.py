"""Run one training stage as a distributed job (`execution.launcher: accelerate`).

The stage's Prefect task stays the one process Prefect knows: it has opened the stage's MLflow
run, and it starts one job, `torchrun` on CPUs (gloo) or `accelerate launch` on GPUs (DDP, or FSDP
and DeepSpeed through `execution.accelerate_config`), of `num_processes` processes that each run
`alignflow.pipeline.launched` on the same request. The job's output streams to this terminal. The main
process (rank 0) logs into the stage's MLflow run and writes the stage folder; the others train
the same model on their shard of every batch and write into scratch folders that go with the job.
Rank 0's StageOutput comes back as JSON; its error, if it failed, is re-raised here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from alignflow.distributed import die_with_parent
from alignflow.errors import DataError, PipelineError
from alignflow.pipeline.prefect_server import free_port
from alignflow.pipeline.stage import StageOutput
from alignflow.schemas.config import PipelineConfig


def launched(stage: str, config: PipelineConfig) -> bool:
    return config.execution.launcher_of(stage) == "accelerate"


def job_processes(config: PipelineConfig) -> int:
    """Processes of a launched job over all machines: the accelerate config's num_processes when one
    is given (its values win), else num_processes x num_machines."""
    execution = config.execution
    if execution.accelerate_config:
        import yaml

        settings = yaml.safe_load(Path(execution.accelerate_config).read_text(encoding="utf-8")) or {}
        if "num_processes" in settings:
            return int(settings["num_processes"])
    return execution.num_processes * execution.num_machines


def job_folder(config: PipelineConfig, out_dir: Path) -> Path:
    """Request, result and the other ranks' scratch space of one launched stage (outside the stage
    folder, whose manifest must hold only the stage's outputs)."""
    return Path(config.cache.dir).resolve().parent / "launch" / out_dir.parent.name / out_dir.name



def launch_command(config: PipelineConfig, request_file: Path, on_gpu: bool) -> list[str]:
    """torchrun for CPU workers (accelerate's own CPU launcher needs MPI), accelerate launch on GPUs."""
    execution = config.execution
    target = ["-m", "alignflow.pipeline.launched", str(request_file)]
    if not on_gpu:
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={execution.num_processes}",
                f"--nnodes={execution.num_machines}", f"--master_port={free_port()}", *target]
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if execution.accelerate_config:
        command += ["--config_file", execution.accelerate_config]
    else:
        total = execution.num_processes * execution.num_machines  # accelerate counts over all machines
        command += ["--num_processes", str(total), "--num_machines", str(execution.num_machines),
                    "--main_process_port", str(free_port())]
        if total > 1:
            command.append("--multi_gpu")
    return [*command, *target]


def run_launched(stage, config: PipelineConfig, section, inputs: dict, out_dir: Path, run_id: str,
                 on_gpu: bool) -> StageOutput:
    """Start the job, wait for it, and return rank 0's StageOutput (or raise its error)."""
    folder = job_folder(config, out_dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    request_file = folder / "request.json"
    section_type = type(section)
    request_file.write_text(json.dumps({
        "stage": list(stage.__reduce__()[1]),  # module, function, variant label
        "config": config.model_dump(mode="json", by_alias=True),
        "section": [section_type.__module__, section_type.__qualname__, section.model_dump(mode="json")],
        "inputs": {name: [type(result).__module__, type(result).__qualname__, result.model_dump(mode="json")]
                   for name, result in inputs.items()},
        "out_dir": str(out_dir), "run_id": run_id, "job": str(folder)}))
    env = {**os.environ, "ACCELERATE_USE_CPU": "false" if on_gpu else "true", "PYTHONUNBUFFERED": "1"}
    print(f"[alignflow] {stage.name}: launching {job_processes(config)} processes "
          f"({'accelerate launch' if on_gpu else 'torchrun, gloo'})", flush=True)
    try:
        code = subprocess.call(launch_command(config, request_file, on_gpu), env=env, stdin=subprocess.DEVNULL,
                               preexec_fn=die_with_parent)
        error_file, result_file = folder / "error.json", folder / "result.json"
        if error_file.is_file():
            error = json.loads(error_file.read_text())
            kind = DataError if error["type"] in ("DataError", "TaskSpecError") else PipelineError
            raise kind(f"{stage.name} (launched job, rank 0): {error['message']}")
        if code != 0 or not result_file.is_file():
            raise PipelineError(f"{stage.name}: the launched job of {job_processes(config)} processes "
                                f"exited with code {code} (its output is above)")
        result = json.loads(result_file.read_text())
        return StageOutput(outputs=result["outputs"], metrics=result["metrics"], summary=result["summary"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def load_typed(module: str, name: str, data: dict):
    """The pydantic object `module.name` validated from `data` (a request's section or input)."""
    import importlib

    return getattr(importlib.import_module(module), name).model_validate(data)
