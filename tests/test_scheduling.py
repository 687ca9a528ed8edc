"""Scheduling against a real Prefect server on 127.0.0.1: `alignflow serve` registers a cron
deployment whose triggered run completes, and prefect.yaml deploys to a process work pool whose
worker runs it. No part of Prefect is mocked."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO, make_project

pytestmark = pytest.mark.slow

PREFECT = str(Path(sys.executable).with_name("prefect"))  # the venv's CLI, next to its python
CRON = "0 3 * * *"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(probe: Callable[[], Any], timeout: float, what: str, process: subprocess.Popen | None = None,
             log: Path | None = None) -> Any:
    """Poll `probe` until it returns something truthy; fail with the process's log if it dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            break
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    pytest.fail(f"{what} not ready after {timeout:.0f}s (process exit {process and process.poll()}):\n{tail}")


def stop(process: subprocess.Popen) -> None:
    """Terminate a process started in its own session, and everything it started."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@dataclass(frozen=True)
class PrefectServer:
    api_url: str
    home: Path  # PREFECT_HOME of the server and of every client the tests start

    def env(self, project: Path) -> dict[str, str]:
        """A client's environment: this server, and PWD as a shell would set it in `project`."""
        return {**os.environ, "PREFECT_HOME": str(self.home), "PREFECT_API_URL": self.api_url,
                "PWD": str(project), "PYTHONUNBUFFERED": "1"}

    def request(self, method: str, path: str, body: dict | None = None, attempts: int = 10) -> Any:
        """One API call. The server answers 503 while its SQLite database is locked by another
        writer (here: the serve process registering its deployment); such a call is retried."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(attempts):
            request = urllib.request.Request(f"{self.api_url}{path}", data=data, method=method,
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                if error.code != 503 or attempt == attempts - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))

    def deployment(self, full_name: str) -> dict | None:
        try:
            return self.request("GET", f"/deployments/name/{full_name}")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def healthy(self) -> bool:
        try:
            return self.request("GET", "/health") is True
        except OSError:
            return False


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> Iterator[PrefectServer]:
    """`prefect server start` on a free port with its own home (SQLite database), stopped afterwards."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    server = PrefectServer(f"http://127.0.0.1:{port}/api", home)
    env = {**os.environ, "PREFECT_HOME": str(home)}
    log = home / "server.log"
    with log.open("w") as out:
        # No scheduler service: runs exist only when a test asks for them, so a worker never picks
        # up a nightly demo run that happens to fall due during the test.
        process = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port),
                                    "--no-ui", "--analytics-off", "--no-scheduler"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(server.healthy, 180, "Prefect server", process, log)
        yield server
    finally:
        stop(process)


def prefect(args: list[str], project: Path, server: PrefectServer, timeout: float = 300) -> str:
    """The `prefect` CLI as a person runs it from the project folder; returns its output."""
    result = subprocess.run([PREFECT, *args], cwd=project, env=server.env(project), capture_output=True,
                            text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"prefect {' '.join(args)} failed:\n{output[-3000:]}"
    return output


def next_scheduled_starts(server: PrefectServer, deployment_id: str, count: int) -> list[datetime]:
    """Ask the server to schedule the deployment's next runs, as its scheduler service would."""
    server.request("POST", f"/deployments/{deployment_id}/schedule", {"min_runs": count, "max_runs": count})
    runs = server.request("POST", "/flow_runs/filter", {
        "deployments": {"id": {"any_": [deployment_id]}},
        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
        "sort": "EXPECTED_START_TIME_ASC"})
    return [datetime.fromisoformat(run["expected_start_time"]) for run in runs]


def created_flow_run_id(output: str) -> str:
    match = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert match, output
    return match.group(1)


def stage_runs(project: Path, stage: str) -> list:
    """MLflow runs of `stage` in the project's default store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project}/mlruns/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.`alignflow.pipeline.stage` = '{stage}'")


def assert_stage_ran(project: Path, stage: str) -> None:
    """The pipeline really ran in the project folder: the stage's artifact folder and MLflow run."""
    outputs = list((project / "artifacts" / stage).glob("*/manifest.json"))
    assert outputs, f"no artifacts/{stage}/<key>/manifest.json in {project}"
    runs = stage_runs(project, stage)
    assert runs and all(run.data.tags.get("mlflow.parentRunId") for run in runs)


def test_serve_registers_a_cron_deployment_and_runs_it(prefect_server, tmp_path):
    project = make_project(tmp_path / "project")
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        serve = subprocess.Popen([sys.executable, "-m", "alignflow.cli", "serve", "configs/smoke.yaml",
                                  "--cron", CRON, "--only", "build", "--set", "seed=0"], cwd=project,
                                 env=prefect_server.env(project), stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        deployment = wait_for(lambda: prefect_server.deployment("alignflow-pipeline/smoke"), 180,
                              "deployment alignflow-pipeline/smoke", serve, log)
        assert [(s["schedule"]["cron"], s["active"]) for s in deployment["schedules"]] == [(CRON, True)]
        assert deployment["parameters"] == {"config_path": "configs/smoke.yaml", "only": "build",
                                            "overrides": ["seed=0"]}
        assert deployment["entrypoint"] == "alignflow.flows.pipeline.pipeline"
        starts = next_scheduled_starts(prefect_server, deployment["id"], 2)
        assert [(t.hour, t.minute, t.utcoffset()) for t in starts] == [(3, 0, timedelta(0))] * 2
        assert starts[1] - starts[0] == timedelta(days=1)
        printed = log.read_text()
        assert "prefect deployment run 'alignflow-pipeline/smoke'" in printed
        assert f"cron '{CRON}'" in printed

        output = prefect(["deployment", "run", "alignflow-pipeline/smoke", "--watch", "--watch-timeout", "240"],
                         project, prefect_server)
        flow_run = prefect_server.request("GET", f"/flow_runs/{created_flow_run_id(output)}")
        assert flow_run["state"]["type"] == "COMPLETED", output + log.read_text()
        assert flow_run["parameters"]["only"] == "build" and flow_run["parameters"]["overrides"] == ["seed=0"]
        assert_stage_ran(project, "build")
        assert not (project / "artifacts" / "pretrain").exists()  # --only build reached the run

        stop(serve)  # SIGTERM, as a service manager stops it: the schedule must not fire unattended
        assert prefect_server.deployment("alignflow-pipeline/smoke")["paused"] is True
    finally:
        stop(serve)


def test_prefect_yaml_deploys_to_a_process_work_pool(prefect_server, tmp_path):
    project = make_project(tmp_path / "project")
    shutil.copy(REPO / "prefect.yaml", project / "prefect.yaml")
    prefect(["work-pool", "create", "alignflow", "--type", "process"], project, prefect_server)
    prefect(["--no-prompt", "deploy", "--all"], project, prefect_server)

    deployment = prefect_server.deployment("alignflow-pipeline/demo-nightly")
    assert deployment is not None
    assert deployment["work_pool_name"] == "alignflow"
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == [CRON]
    assert deployment["parameters"] == {"config_path": "configs/demo.yaml"}
    assert deployment["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(project)}}]

    # A run through a worker (`prefect worker start --pool alignflow --run-once`) is left out to keep
    # the suite short: the serve test above already runs the same flow from a deployment.


def test_prefect_yaml_matches_the_flow():
    """Cheap guard for signature changes: entrypoint loads, parameters exist, the config validates."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint

    from alignflow.pipeline.config import load_config

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    for deployment in spec["deployments"]:
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        assert flow.name == "alignflow-pipeline"
        signature = inspect.signature(flow.fn).parameters
        assert set(deployment["parameters"]) <= set(signature)
        required = {name for name, p in signature.items() if p.default is inspect.Parameter.empty}
        assert required <= set(deployment["parameters"])
        load_config(REPO / deployment["parameters"]["config_path"])
        for schedule in deployment["schedules"]:
            CronSchedule(**schedule)


@pytest.mark.parametrize(("cron", "api_url", "message"), [
    (CRON, None, "serve needs a persistent Prefect server"),
    ("0 3 * *", None, "Invalid cron string"),
    (CRON, "http://127.0.0.1:9/api", "no Prefect API answers"),
])
def test_serve_refuses_what_it_cannot_schedule(project, capsys, cron, api_url, message):
    """In this process: its Prefect settings have no API URL (conftest), as a fresh shell has none."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from alignflow.cli import main

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        assert main(["serve", "configs/smoke.yaml", "--cron", cron]) == 2
    assert message in capsys.readouterr().err


def test_side_by_side_stages_go_to_the_least_busy_gpu():
    from collections import Counter

    from alignflow.pipeline.runner import least_busy

    busy = Counter()
    given = []
    for _ in range(5):
        gpu = least_busy([0, 1, 2], busy)
        busy[gpu] += 1
        given.append(gpu)
    assert given == [0, 1, 2, 0, 1]
    busy[0] -= 2  # two stages on GPU 0 finished
    assert least_busy([0, 1, 2], busy) == 0


def test_stages_share_the_configured_device_unless_it_is_auto():
    from alignflow.pipeline.runner import stage_gpus
    from alignflow.schemas.config import PipelineConfig

    pinned = PipelineConfig.model_validate({"name": "x", "base_model": "m", "execution": {"device": "cpu"}})
    assert stage_gpus(pinned) == []
    auto = PipelineConfig.model_validate({"name": "x", "base_model": "m"})
    assert stage_gpus(auto) == []  # this machine has no GPU (several are needed to spread over)


def test_only_side_by_side_stages_spread_over_several_gpus(monkeypatch):
    """With stages one at a time nothing is spread (and torch is not asked); with parallel_stages > 1
    every GPU of the machine takes stages. (This machine has none: torch's count is set here.)"""
    import torch

    from alignflow.pipeline.runner import stage_gpus
    from alignflow.schemas.config import PipelineConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    one_at_a_time = PipelineConfig.model_validate({"name": "x", "base_model": "m"})
    side_by_side = PipelineConfig.model_validate({"name": "x", "base_model": "m", "execution": {"parallel_stages": 2}})
    assert stage_gpus(one_at_a_time) == []
    assert stage_gpus(side_by_side) == [0, 1, 2, 3]
