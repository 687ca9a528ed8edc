"""The layering, read from source: the library (alignflow/) never imports the stages
(alignflow.tasks), the flows or the demo, and no stage imports another stage, so a stage's code
digest holds its own code and what it uses, and the library runs without the demo."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignflow.pipeline.caching import imported_names as imports

REPO = Path(__file__).resolve().parents[1]
# The entry points that run or serve the pipeline: they must know its stages and flow.
ENTRY_POINTS = {"alignflow.cli", "alignflow.pipeline.launched", "alignflow.pipeline.scheduling"}


def module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def modules(root: Path, package: str) -> list[tuple[str, Path]]:
    return [(module_name(path, root, package), path) for path in sorted(root.rglob("*.py"))]


def starts(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_library_imports_neither_stages_flows_nor_demo():
    forbidden = ("alignflow.tasks", "alignflow.flows", "alignflow.demo")
    offenders = {name: sorted(m for m in imports(path, name) if starts(m, forbidden))
                 for name, path in modules(REPO / "alignflow", "alignflow")
                 if not starts(name, ("alignflow.demo",)) and name not in ENTRY_POINTS}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_demo_imports_no_stage():
    offenders = {name: sorted(m for m in imports(path, name) if starts(m, ("alignflow.tasks", "alignflow.flows")))
                 for name, path in modules(REPO / "alignflow" / "demo", "alignflow.demo")}
    assert {name: found for name, found in offenders.items() if found} == {}


STAGE_FILES = sorted(p for p in (REPO / "tasks").glob("*.py") if p.name != "__init__.py")  # __init__ lists them


@pytest.mark.parametrize("path", STAGE_FILES, ids=lambda p: p.stem)
def test_a_stage_imports_no_other_stage(path):
    name = module_name(path, REPO / "tasks", "alignflow.tasks")
    others = sorted(m for m in imports(path, name) if starts(m, ("alignflow.tasks",)) and not starts(m, (name,)))
    assert others == []


def test_the_checker_sees_a_relative_import_inside_a_function(tmp_path):
    (tmp_path / "stage.py").write_text("def run():\n    from ..tasks import sft\n")
    assert "alignflow.tasks.sft" in imports(tmp_path / "stage.py", "alignflow.training.stage")


# What may stand at alignflow/'s top level: the command line and the leaf helpers every folder uses.
TOP_LEVEL = {"__init__", "cli", "errors", "distributed", "progress"}


def test_the_library_is_grouped_in_folders():
    loose = {p.stem for p in (REPO / "alignflow").glob("*.py")} - TOP_LEVEL
    folders = {p.name for p in (REPO / "alignflow").iterdir() if (p / "__init__.py").is_file()}
    assert loose == set()
    assert folders == {"pipeline", "tracking", "models", "data", "training", "rl", "evaluation", "demo"}


def test_text_is_generated_in_one_module():
    """Every `.generate(` call of the library and the stages sits in alignflow.models.generation."""
    sources = [*(REPO / "alignflow").rglob("*.py"), *(REPO / "tasks").glob("*.py"), *(REPO / "flows").glob("*.py")]
    callers = {p.relative_to(REPO).as_posix() for p in sources if ".generate(" in p.read_text()}
    assert callers == {"alignflow/models/generation.py"}
