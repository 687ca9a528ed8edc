"""Test session set-up: Prefect and MLflow state in temporary folders, never the user's home."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="alignflow-tests-"))
# Before anything imports prefect: this process's ephemeral Prefect server lives here.
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)

from alignflow.environment import configure_environment  # noqa: E402

configure_environment(_SESSION_HOME)


def make_project(folder: Path) -> Path:
    """A project folder as a user has it: the shipped configs and data files."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "configs", folder / "configs", dirs_exist_ok=True)
    shutil.copytree(REPO / "data", folder / "data", dirs_exist_ok=True)
    return folder


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project folder as the current directory."""
    make_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(args: list[str], cwd: Path, prefect_home: Path) -> subprocess.CompletedProcess:
    """`alignflow ARGS` in a new process (its own Prefect server), as a user runs it."""
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "alignflow.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
