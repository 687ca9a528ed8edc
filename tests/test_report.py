"""The pipeline run's report.html, rendered by a real (headless) Chromium: it must stand on its own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def report(training_project, tmp_path_factory) -> tuple[Path, MlflowClient]:
    client = MlflowClient(tracking_uri=f"sqlite:///{training_project.folder}/mlruns/mlflow.db")
    folder = tmp_path_factory.mktemp("report")
    return Path(client.download_artifacts(training_project.parent_run_id, "report.html", str(folder))), client


def test_report_is_self_contained(report):
    html = report[0].read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in html
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "no external resources"


def test_report_renders_in_chromium(report, browser, training_project):
    path, client = report
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
    page.goto(path.as_uri(), wait_until="load")

    assert "alignflow report" in page.title()
    assert page.locator("h1").inner_text().startswith("alignflow report")
    rows = page.evaluate("Array.from(document.querySelectorAll('table')).map(t => t.tBodies[0].rows.length)")
    assert len(rows) > 10 and min(rows) >= 1, rows
    images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    assert any(alt == "lineage graph" for alt, _, _ in images)
    assert any(alt == "reward-KL frontier" for alt, _, _ in images)  # the sweep points of the shared project
    assert sum(alt.startswith("plots/") for alt, _, _ in images) >= 5
    assert all(complete and width > 0 for _, complete, width in images), images
    assert problems == []

    text = page.locator("body").inner_text()
    parent = client.get_run(training_project.parent_run_id)
    stages = client.search_runs([parent.info.experiment_id],
                                f"tags.mlflow.parentRunId = '{training_project.parent_run_id}'")
    for run in stages:
        # an attribute selector: sweep points' ids hold dots (stage-grpo-beta-0.2)
        assert page.locator(f"[id=\"stage-{run.data.tags['alignflow.pipeline.stage']}\"]").count() == 1
        assert run.info.run_id in text
    evaluate = next(r for r in stages if r.data.tags["alignflow.pipeline.stage"] == "evaluate")
    records = Path(client.download_artifacts(evaluate.info.run_id, "samples/sft.jsonl", str(path.parent)))
    record = json.loads(records.read_text(encoding="utf-8").splitlines()[0])
    assert record["target"] in text and record["input"] in text  # Chinese survives, per-sample records shown
    assert "samples/step_" in text  # PPO's sample generations
    page.close()
