"""Test session set-up: Prefect and MLflow state in temporary folders, never the user's home."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="alignflow-tests-"))
# Before anything imports prefect: this process's ephemeral Prefect server lives here.
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)

from alignflow.pipeline.environment import configure_environment  # noqa: E402

configure_environment(_SESSION_HOME)
# Imported now, so that `alignflow` commands run inside this process use Prefect's own temporary
# server of this process and never set PREFECT_API_URL for the subprocesses the tests start.
import prefect  # noqa: E402, F401
from helpers import (  # noqa: E402
    SWEEPS,
    TINY_TEXTS,
    TINY_VOCAB,
    TRAINING_STAGES,
    TrainedProject,
    edit_config,
    make_project,
    run_here,
    tiny_llama_config,
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project folder as the current directory."""
    make_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def training_project(tmp_path_factory) -> TrainedProject:
    """One project with every stage run (smoke + LoRA SFT, preferences, reward model, DPO, PPO,
    GRPO, RLOO, evaluate, and the sweep points in SWEEPS). Tests that change it restore its config; later runs add runs, so
    address the first one through `parent_run_id`."""
    from mlflow.tracking import MlflowClient

    folder = make_project(tmp_path_factory.mktemp("training"))
    path = folder / "configs" / "prefs.yaml"
    path.write_text((folder / "configs" / "smoke.yaml").read_text(encoding="utf-8"), encoding="utf-8")

    def add_stages(stages):
        stages["build"]["demo_families"] = {"families": ["add", "reverse"], "per_family": 12}
        for name, settings in json.loads(json.dumps(TRAINING_STAGES)).items():
            stages[name] = {**stages.get(name, {}), **settings}

    edit_config(path, add_stages)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["sweeps"] = SWEEPS
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    result = run_here(["run", "configs/prefs.yaml"], folder)
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return TrainedProject(folder, "configs/prefs.yaml", parents[0].info.run_id)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The demo's byte-level BPE trained once on TINY_TEXTS. Shared: tests that change its settings
    (padding side) work on `copy.deepcopy` of it."""
    from alignflow.demo.tokenizer import train_tokenizer

    return train_tokenizer(TINY_TEXTS, TINY_VOCAB)


@pytest.fixture(scope="session")
def tiny_llama(tiny_tokenizer, tmp_path_factory) -> Path:
    """A randomly initialised one-layer Llama and its tokenizer, saved once; tests load their own
    copy (`from_pretrained`), so none sees another's training."""
    import torch
    from transformers import LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tiny_tokenizer)).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium under Playwright (alignflow never downloads a browser). Per module:
    Playwright's sync API keeps an event loop running in this thread, and Prefect, seeing it, would
    answer the next modules' flows with coroutines."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; CI must provide the system Chromium")
        pytest.skip(f"{CHROMIUM} is missing (alignflow never downloads a browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()
