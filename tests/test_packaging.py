"""A built wheel is a complete install: every package is in it and the CLI runs from it alone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from helpers import REPO, make_project


def source_packages() -> set[str]:
    """Every package folder of the source tree, by the name it installs under."""
    names = set()
    for top, installed in [("alignflow", "alignflow"), ("flows", "alignflow.flows"), ("tasks", "alignflow.tasks"),
                           ("schemas", "alignflow.schemas")]:
        for init in (REPO / top).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / top).parts
            names.add(".".join([installed, *relative]))
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of the files git knows (as a clean clone has them), built outside the work tree so
    that no build/ or egg-info is left in it."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout.splitlines()
    for name in listed:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, text=True, timeout=300)
    return next(out.glob("alignflow-*.whl"))


def test_the_wheel_holds_every_package(wheel):
    files = zipfile.ZipFile(wheel).namelist()
    packaged = {str(Path(f).parent).replace("/", ".") for f in files if f.endswith("/__init__.py")}
    assert source_packages() <= packaged, f"missing from the wheel: {sorted(source_packages() - packaged)}"
    assert not [f for f in files if f.startswith(("tasks/", "flows/", "schemas/", "tests/"))]
    typed = [f for f in files if f.endswith("py.typed")]
    assert typed == [], "py.typed is not shipped: the package is not checked with a type checker"


@pytest.mark.slow
def test_alignflow_runs_from_a_wheel_in_a_fresh_venv(wheel, tmp_path):
    """The wheel installed into a new venv with no editable install of alignflow: its own CLI
    validates the smoke config and runs the smoke pipeline. The dependencies (torch, transformers,
    ...) come from this venv's site-packages through a .pth path: the test installs nothing from
    the network, and a path added that way does not run this venv's editable-install hook."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    fresh_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                check=True, capture_output=True, text=True).stdout.strip()
    Path(fresh_site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, timeout=300,
                   capture_output=True)
    project = make_project(tmp_path / "project")
    env = {**os.environ, "PREFECT_HOME": str(project / ".prefect"), "PYTHONPATH": ""}
    where = subprocess.run([python, "-c", "import alignflow, alignflow.data, alignflow.rl, alignflow.training; "
                            "print(alignflow.__file__)"], cwd=project, env=env, check=True, capture_output=True,
                           text=True).stdout
    assert where.startswith(fresh_site), where
    cli = str(venv / "bin" / "alignflow")
    checked = subprocess.run([cli, "validate", "configs/smoke.yaml"], cwd=project, env=env, capture_output=True,
                             text=True, timeout=300)
    assert checked.returncode == 0 and "valid; stages:" in checked.stdout, checked.stdout + checked.stderr
    run = subprocess.run([cli, "run", "configs/smoke.yaml"], cwd=project, env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert re.search(r"^(\d+) stages: \1 computed, 0 from cache", run.stdout, re.MULTILINE), run.stdout[-2000:]
