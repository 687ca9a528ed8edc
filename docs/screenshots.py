"""Screenshots of the MLflow UI for the README, taken from a project folder after `make demo`.

Starts `alignflow ui` on a free port, opens pages in the system's headless Chromium (Playwright,
no browser download) and writes PNGs to docs/images/. Usage, from the project folder:
    python docs/screenshots.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from mlflow.tracking import MlflowClient

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def latest_pipeline_run(client: MlflowClient, experiment_id: str):
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"])
    return next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)


def first_computed_pipeline_run(client: MlflowClient, experiment_id: str):
    """The oldest pipeline run: the cold `make demo`, whose stages were all computed."""
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time ASC"])
    return next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)


def stage_run(client: MlflowClient, experiment_id: str, parent_id: str, stage: str):
    return client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                              f"tags.`alignflow.pipeline.stage` = '{stage}'")[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--experiment", default="demo")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=f"sqlite:///{Path('mlruns').resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(args.experiment)
    parent = first_computed_pipeline_run(client, experiment.experiment_id)
    ppo = stage_run(client, experiment.experiment_id, parent.info.run_id, "ppo")
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "alignflow.cli", "ui", "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        shoot(base, out, experiment.experiment_id, parent.info.run_id, ppo.info.run_id)
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


def settle_ui(page) -> None:
    """The classic view: "Model training" mode, no assistant panel or feature tour in the way."""
    for label in ("Model training", "Got it"):
        target = page.get_by_text(label, exact=True)
        if target.count():
            target.first.click()
            time.sleep(1)
    close = page.locator("[aria-label*='lose']")  # "Close" buttons (assistant panel)
    for index in range(close.count()):
        if close.nth(index).is_visible():
            close.nth(index).click()
            time.sleep(0.5)


def shoot(base: str, out: Path, experiment_id: str, parent_id: str, ppo_id: str) -> None:
    from playwright.sync_api import sync_playwright

    pages = {
        "mlflow-runs.png": f"{base}/#/experiments/{experiment_id}/runs",
        "mlflow-report.png": f"{base}/#/experiments/{experiment_id}/runs/{parent_id}/artifacts/report.html",
        "mlflow-lineage.png": f"{base}/#/experiments/{experiment_id}/runs/{parent_id}/artifacts/lineage.svg",
        "mlflow-ppo-metrics.png": f"{base}/#/experiments/{experiment_id}/runs/{ppo_id}/model-metrics",
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(pages["mlflow-runs.png"], wait_until="load")
        time.sleep(6)
        settle_ui(page)
        for name, url in pages.items():
            page.goto(url, wait_until="load")
            page.reload(wait_until="load")  # a new hash alone keeps the previous artifact selected
            time.sleep(8)  # the UI polls; charts and the artifact viewer render after the data arrives
            settle_ui(page)
            if name == "mlflow-runs.png":  # the cold run (listed last) with its stage runs under it
                expanders = page.locator("button[data-component-id*='runnamecellrenderer']")
                expanders.nth(expanders.count() - 1).click()
                time.sleep(3)
            page.screenshot(path=str(out / name))
            print(f"{out / name}: {url}")
        browser.close()


if __name__ == "__main__":
    main()
