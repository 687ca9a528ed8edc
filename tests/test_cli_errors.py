"""Mistakes a user makes on the command line or in a config's files: one clear line, exit code 2,
no traceback, and no flow run started."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import REPO, run_cli, run_in_this_process

SMOKE_STAGES = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text(encoding="utf-8"))


def write_config(project, name: str, stages: dict, **top) -> str:
    config = {"name": "errors", "seed": 0, **top, "stages": stages}
    (project / "configs" / name).write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return f"configs/{name}"


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def flow_run_count() -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return len(client.read_flow_runs())


def test_a_stage_whose_upstream_is_not_configured_is_a_validate_error(project, capsys):
    stages = {**SMOKE_STAGES["stages"], "dpo": {"max_steps": 2}}
    line = one_error_line(run_in_this_process(["validate", write_config(project, "dpo.yaml", stages)],
                                              project, capsys))
    assert "stages.dpo needs stages.preferences" in line


def test_an_unknown_stage_fails_before_any_flow_run(project, capsys):
    before = flow_run_count()
    line = one_error_line(run_in_this_process(["run", "configs/smoke.yaml", "--only", "dpoo"], project, capsys))
    assert "--only dpoo: unknown stage" in line
    assert flow_run_count() == before


def test_a_missing_task_file_in_the_config_fails_before_any_flow_run(project, capsys):
    stages = {**SMOKE_STAGES["stages"], "evaluate": {"tasks": ["data/eval/tasks/absent.yaml"]}}
    before = flow_run_count()
    line = one_error_line(run_in_this_process(["run", write_config(project, "tasks.yaml", stages)], project, capsys))
    assert "absent.yaml" in line
    assert flow_run_count() == before


def test_a_missing_seed_file_fails_before_any_flow_run(project, capsys):
    stages = {"pretrain": SMOKE_STAGES["stages"]["pretrain"], "build": {"seeds": ["data/seed/absent.jsonl"]}}
    before = flow_run_count()
    line = one_error_line(run_in_this_process(["run", write_config(project, "seeds.yaml", stages)], project, capsys))
    assert line == "error: build.seeds: data/seed/absent.jsonl: no such file"
    assert flow_run_count() == before


def test_a_missing_judge_folder_fails_before_any_flow_run(project, capsys):
    stages = {**SMOKE_STAGES["stages"],
              "preferences": {"annotator": "judge", "judge": {"model": "./models/absent-judge"}}}
    before = flow_run_count()
    line = one_error_line(run_in_this_process(["run", write_config(project, "judge.yaml", stages)], project, capsys))
    assert line == "error: stages.preferences.judge.model './models/absent-judge' cannot be loaded: no such folder"
    assert flow_run_count() == before


def test_eval_of_a_missing_model_folder_or_task_file(project, capsys):
    task = "data/eval/tasks/recognize_sentence_zh.yaml"
    line = one_error_line(run_in_this_process(["eval", str(project / "absent"), "--task", task], project, capsys))
    assert line == f"error: model '{project / 'absent'}' cannot be loaded: no such folder"
    line = one_error_line(run_in_this_process(["eval", str(project), "--task", task], project, capsys))
    assert "the folder has no config.json" in line
    line = one_error_line(run_in_this_process(["eval", str(project), "--task", "absent.yaml"], project, capsys))
    assert "absent.yaml: cannot read task file" in line


@pytest.mark.slow
def test_a_stage_that_rejects_its_input_is_one_line_in_the_terminal(project):
    """The build stage refuses a seed file whose every row has an unknown field: the user sees the
    stage's own message (file, row, field) once, without Prefect's traceback of it."""
    rows = [{"id": f"r{i}", "task": "t", "instruction": "判断情感", "output": "积极", "colour": "red"} for i in range(4)]
    (project / "bad.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                                       encoding="utf-8")
    stages = {"pretrain": SMOKE_STAGES["stages"]["pretrain"], "build": {"seeds": ["bad.jsonl"]}}
    result = run_cli(["run", write_config(project, "bad.yaml", stages)], project, project / ".prefect")
    assert result.returncode == 2, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert "build: 4 of 4 rows rejected" in result.stderr
    assert "bad.jsonl row 1 [colour] unexpected_field" in result.stderr
    assert output.count("4 of 4 rows rejected") == 1


def test_a_device_this_machine_does_not_have_fails_before_any_flow_run(project, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    stages = {"pretrain": SMOKE_STAGES["stages"]["pretrain"]}
    config = write_config(project, "cuda.yaml", stages, execution={"device": "cuda:0"})
    line = one_error_line(run_in_this_process(["run", config], project, capsys))
    assert "execution.device 'cuda:0': no CUDA device is available" in line
    config = write_config(project, "fp16.yaml", stages, execution={"device": "cpu", "dtype": "float16"})
    line = one_error_line(run_in_this_process(["validate", config], project, capsys))
    assert "float16 needs a CUDA device" in line


def test_missing_chat_template_and_accelerate_config_files_fail_before_any_flow_run(project, capsys):
    stages = {"pretrain": SMOKE_STAGES["stages"]["pretrain"]}
    config = write_config(project, "template.yaml", stages, chat_template="templates/absent.jinja")
    line = one_error_line(run_in_this_process(["run", config], project, capsys))
    assert "chat_template 'templates/absent.jinja': no such file" in line
    config = write_config(project, "accelerate.yaml", stages,
                          execution={"launcher": "accelerate", "accelerate_config": "fsdp.yaml"})
    line = one_error_line(run_in_this_process(["run", config], project, capsys))
    assert line == "error: execution.accelerate_config: fsdp.yaml: no such file"
