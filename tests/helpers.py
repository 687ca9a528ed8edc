"""Helpers the tests share: project folders as a user has them, the CLI in this process or in a
new one, config edits, the MLflow store of a project. Fixtures are in conftest.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def make_project(folder: Path) -> Path:
    """A project folder as a user has it: the shipped configs and data files."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "configs", folder / "configs", dirs_exist_ok=True)
    shutil.copytree(REPO / "data", folder / "data", dirs_exist_ok=True)
    return folder


def run_in_this_process(args: list[str], cwd: Path, capsys: pytest.CaptureFixture) -> subprocess.CompletedProcess:
    """`alignflow ARGS` in the test process, in `cwd`. Its Prefect server and imports are warm, which
    saves a new process's start-up (~15 s): for runs whose point is not a fresh process."""
    from alignflow.cli import main

    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        code = main(args)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def run_here(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`run_in_this_process` for a fixture wider than one test (capsys is per test): the output is
    caught by redirecting sys.stdout and sys.stderr."""
    import contextlib
    import io

    from alignflow.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        patch.chdir(cwd)
        code = main(args)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


# A run is stuck, not slow, when it prints nothing for this long: the limit follows the work (a
# loaded machine makes runs longer, not quieter), where a fixed wall-clock limit failed under load.
QUIET_LIMIT_S = 600


def run_cli(args: list[str], cwd: Path, prefect_home: Path, quiet_limit: float = QUIET_LIMIT_S
            ) -> subprocess.CompletedProcess:
    """`alignflow ARGS` in a new process (its own Prefect server), as a user runs it; killed only
    when it has printed nothing for `quiet_limit` seconds."""
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "alignflow.cli", *args]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, encoding="utf-8", errors="replace")
    streams = {"out": [], "err": []}
    last_output = [time.monotonic()]

    def drain(pipe, lines):
        for line in pipe:
            lines.append(line)
            last_output[0] = time.monotonic()

    readers = [threading.Thread(target=drain, args=(process.stdout, streams["out"]), daemon=True),
               threading.Thread(target=drain, args=(process.stderr, streams["err"]), daemon=True)]
    for reader in readers:
        reader.start()
    while process.poll() is None:
        if time.monotonic() - last_output[0] > quiet_limit:
            process.kill()
            process.wait()
            raise subprocess.TimeoutExpired(command, quiet_limit, "".join(streams["out"]), "".join(streams["err"]))
        time.sleep(0.5)
    for reader in readers:
        reader.join()
    return subprocess.CompletedProcess(command, process.returncode, "".join(streams["out"]), "".join(streams["err"]))


def edit_config(path: Path, change) -> None:
    """Apply `change` to the `stages` mapping of the YAML config at `path`."""
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(config["stages"])
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")


# Every training stage, tiny: the smoke pipeline plus demo-family rows, run once per test session.
TRAINING_STAGES = {

    "sft": {"method": "lora", "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
            "max_steps": 12, "logging_steps": 1, "eval_steps": 2, "save_steps": 6,
            "mixing": {"cap": 15, "temperature": 2.0, "task_weights": {"add": 2.0}},
            "curriculum": {"order_by": "base_loss", "phases": 3, "adaptive": True},
            "plateau": {"factor": 0.5, "patience": 1}},
    "preferences": {"tasks": ["add", "reverse"], "num_samples": 4, "max_new_tokens": 8, "eval_prompts": 8,
                    "heldout_fraction": 0.25},
    "reward_model": {"max_steps": 6, "batch_size": 4, "logging_steps": 1, "eval_steps": 3},
    "dpo": {"max_steps": 6, "batch_size": 4, "logging_steps": 1, "eval_steps": 3, "win_rate_max_new_tokens": 6,
            "heldout_max_new_tokens": 6},
    "ppo": {"max_steps": 3, "batch_size": 4, "mini_batch_size": 2, "max_new_tokens": 6, "save_steps": 2,
            "sample_every": 2, "learning_rate": 1e-4, "sft_loss_coef": 0.5, "sft_loss_batch_size": 2},
    "grpo": {"max_steps": 2, "batch_size": 4, "num_generations": 2, "max_completion_length": 6, "logging_steps": 1,
             "sft_loss_coef": 0.5, "sft_loss_batch_size": 2},
    "rloo": {"max_steps": 2, "batch_size": 4, "num_generations": 2, "max_completion_length": 6, "logging_steps": 1},
}

# One more run of two methods (the reward-KL frontier's sweep points), beside the configured ones.
SWEEPS = {"dpo": {"beta": [0.5]}, "grpo": {"beta": [0.2]}, "pretrain": {"model.num_hidden_layers": [2]}}


@dataclass(frozen=True)
class TrainedProject:
    folder: Path
    config: str  # relative to folder
    parent_run_id: str  # the first, full pipeline run


def config_variant(project: TrainedProject, name: str, stage: str | None, change) -> str:
    """A copy of the shared project's config, `change` applied to one stage's section (or, with
    `stage` None, to the whole config); returns its path relative to the project folder."""
    config = yaml.safe_load((project.folder / project.config).read_text(encoding="utf-8"))
    change(config if stage is None else config["stages"][stage])
    path = project.folder / "configs" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return str(path.relative_to(project.folder))


def project_store(folder: Path):
    """The MLflow client of a project folder's default store."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{folder}/mlruns/mlflow.db")


def metric_steps(folder: Path, run_id: str, key: str) -> list[int]:
    """The steps at which `key` was logged in a run, in order."""
    return [m.step for m in project_store(folder).get_metric_history(run_id, key)]


def stage_statuses(output: str) -> dict[str, str]:
    """stage -> computed/cached, from the summary table `alignflow run` prints."""
    return {p[0]: p[1] for p in (line.split() for line in output.splitlines())
            if len(p) >= 2 and p[1] in ("computed", "cached")}


def stage_runs(folder: Path, stage: str, experiment: str = "smoke"):
    """Every MLflow run of `stage` in a project folder's experiment, oldest first."""
    from alignflow.tracking.runs import TAG_STAGE

    store = project_store(folder)
    found = store.get_experiment_by_name(experiment)
    return store.search_runs([found.experiment_id], f"tags.`{TAG_STAGE}` = '{stage}'",
                             order_by=["attributes.start_time ASC"])


def run_until_killed(folder: Path, args: list[str], ready: Callable[[], bool], log: Path,
                     quiet_limit: float = QUIET_LIMIT_S) -> None:
    """Start `alignflow ARGS`, SIGKILL its whole process group as soon as `ready()` holds (it fails
    if the process ends first, or writes nothing to its log for `quiet_limit` seconds)."""
    env = {**os.environ, "PREFECT_HOME": str(folder / ".prefect"), "PYTHONUNBUFFERED": "1"}
    with log.open("w") as output:
        process = subprocess.Popen([sys.executable, "-m", "alignflow.cli", *args], cwd=folder, env=env,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        size, last_growth = 0, time.monotonic()
        while process.poll() is None and not ready():
            if log.stat().st_size != size:
                size, last_growth = log.stat().st_size, time.monotonic()
            elif time.monotonic() - last_growth > quiet_limit:
                break
            time.sleep(0.05)
        assert process.poll() is None and ready(), log.read_text()[-3000:]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def instruction_row(id: str = "r1", instruction: str = "判断下面评论的情感倾向，回答积极或消极。", input: str = "这部电影太棒了！",
                    output: str = "积极", task: str = "sentiment") -> dict:
    """One valid basic instruction row; tests change one field."""
    user = f"{instruction}\n{input}" if input else instruction
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return {"id": id, "task": task, "format": "basic", "instruction": instruction, "input": input, "output": output,
            "messages": json.dumps(messages, ensure_ascii=False), "source": "test"}


def stage_result(stage: str, outputs: dict[str, str], digest: str = "digest", run_id: str = "run", kind=None):
    """A hand-made upstream result (a StageResult, or `kind` of one), as a stage function receives it."""
    from alignflow.pipeline.stage import StageResult

    return (kind or StageResult)(stage=stage, cache_key=f"{stage}-key", out_dir="", outputs=outputs, digest=digest,
                       mlflow_run_id=run_id)


# Text the shared tiny tokenizer is trained on: every prompt, answer and word the model-level unit
# tests feed it (templates in both languages, digits, the judge's question and answers).
TINY_TEXTS = ["指令：计算两个数的和\n输入：3, 4\n输出：7", "Input: apple\nOutput: elppa", "好评 差评 电影 餐饮",
              "这个回答正确吗？答：是否", "指令：翻译\n输入：apple\n输出：苹果", "你好 好的 再见 拜拜 hello world",
              "Input: the movie was great\nOutput: positive\n\n", "输入：apple\n输出：苹果\n\n",
              "Input: 3, 4\nOutput: 7\n\n", "Input: cat\nOutput: tac\n\n", "Input: two\nOutput: 2"] * 20
TINY_VOCAB = 400


def tiny_llama_config(tokenizer, **extra):
    """The tiny Llama shape the unit tests share (one layer unless `extra` says otherwise)."""
    from transformers import LlamaConfig

    shape = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                 num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                 bos_token_id=tokenizer.bos_token_id)
    return LlamaConfig(**{**shape, **extra})
