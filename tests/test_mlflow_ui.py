"""MLflow's own UI, served by `alignflow ui` over the shared smoke project and read in headless
Chromium: the Models column, each training run's logged model, and its dataset and model inputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from helpers import project_store
from test_ui import free_port

from alignflow.tracking.logged_models import models_of_run
from alignflow.tracking.runs import TAG_STAGE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ui(training_project):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "alignflow.cli", "ui", "--port", str(port)],
                               cwd=training_project.folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while process.poll() is None:  # until the server answers, or dies
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        assert process.poll() is None, process.stdout.read().decode()[-2000:]
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def stage_runs(training_project) -> dict:
    store = project_store(training_project.folder)
    parent = store.get_run(training_project.parent_run_id)
    runs = store.search_runs([parent.info.experiment_id],
                             f"tags.mlflow.parentRunId = '{training_project.parent_run_id}'")
    return {run.data.tags[TAG_STAGE]: run for run in runs}


def open_run(browser, url: str, run, models: int) -> str:
    """The text of the run's page, once the run and each of `models` logged-model rows (status
    Ready) have loaded."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")
    page.get_by_text(run.info.run_id).first.wait_for(timeout=120_000)
    page.get_by_text("Ready", exact=True).nth(models - 1).wait_for(timeout=120_000)
    text = page.locator("body").inner_text()
    page.close()
    return text


def logged_models_shown(training_project, run) -> int:
    """The rows the run page's Logged models table should have: its own models and its inputs."""
    store = project_store(training_project.folder)
    own = models_of_run(run.info.run_id, run.info.experiment_id, store)
    return len(own) + len(store.get_run(run.info.run_id).inputs.model_inputs)


def test_the_ui_shows_logged_models_and_the_inputs_of_every_training_run(ui, browser, training_project):
    runs = stage_runs(training_project)
    for stage, datasets in [("sft", ["instructions-train"]), ("dpo", ["preferences.pairs_train"]),
                            ("ppo", ["preferences.pairs_train"]), ("evaluate", [])]:
        shown = logged_models_shown(training_project, runs[stage])
        text = open_run(browser, ui, runs[stage], shown)
        models = text.split("Logged models (")[1].split("About this run")[0]
        assert models.startswith(f"{shown})"), (stage, models)
        assert "Input" in models, (stage, models)  # the upstream models it read
        assert ("Output" in models) == (stage != "evaluate"), (stage, models)  # the model it made
        for name in datasets:
            assert name in text, (stage, name)
    assert "smoke-sft" in open_run(browser, ui, runs["sft"], 2)  # its registry version

    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    page.goto(f"{ui}/#/experiments/{runs['sft'].info.experiment_id}/models")  # the experiment's Models tab
    page.get_by_text("smoke-dpo").first.wait_for(timeout=120_000)
    text = page.locator("body").inner_text()
    page.close()
    for stage in ("sft", "reward_model", "dpo", "ppo"):
        assert f"smoke-{stage}" in text, stage  # each model with its registry version
