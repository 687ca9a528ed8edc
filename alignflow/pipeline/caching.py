"""Stage cache keys, artifact manifests and lookups in Prefect's result storage.

A stage's key hashes everything that determines its output: its config section, the digests
of its inputs, the source of its code and alignflow's version. Prefect persists each stage's
result under that key; the manifest written beside the stage's files lets a later run tell a
usable cached result from one whose files were deleted or damaged (a miss, never a crash).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from alignflow import __version__

MANIFEST = "manifest.json"
# Files that hold a run id or a time (model cards): listed and verified in the manifest, but not
# part of the output digest, so a recomputed model with the same weights keeps downstream cached.
VOLATILE_FILES = ("README.md",)
# Modules that decide when and where a stage runs, not what it computes: a stage's code digest
# does not follow imports into them (else every edit of the runner would recompute everything).
ORCHESTRATION = frozenset({"alignflow.pipeline.runner", "alignflow.cli", "alignflow.pipeline.prefect_server", "alignflow.pipeline.scheduling",
                           "alignflow.tracking.report", "alignflow.tracking.lineage_picture", "alignflow.tasks", "alignflow.flows"})


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def folder_fingerprint(folder: Path) -> str:
    """Cheap identity of a local model folder (names, sizes, mtimes), so edits change the cache key."""
    entries = sorted(
        (p.relative_to(folder).as_posix(), p.stat().st_size, int(p.stat().st_mtime))
        for p in folder.rglob("*") if p.is_file()
    )
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def code_digest(module_names: tuple[str, ...]) -> str:
    """Digest of the source files of the modules that implement a stage (read, not imported)."""
    digest = hashlib.sha256()
    for name in sorted(module_names):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            raise ValueError(f"stage code module {name!r} not found")
        digest.update(name.encode())
        digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()


def module_closure(roots: Iterable[str], package: str = "alignflow",
                   boundary: frozenset[str] = ORCHESTRATION) -> tuple[str, ...]:
    """`roots` and every module of `package` they import, transitively (imports inside functions
    too: stages import torch-side code lazily), read from source, never imported; parent packages
    below the top one count as imported. Traversal stops at `boundary` modules."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name in boundary:
            continue
        origin = _source_file(name)
        if origin is None:
            raise ValueError(f"stage code module {name!r} not found")
        seen.add(name)
        parent = name.rpartition(".")[0]
        if parent and parent != package:
            todo.append(parent)
        stamp = Path(origin).stat().st_mtime_ns  # an edited file is parsed again
        todo += [m for m in _imported(origin, stamp, name, package) if m not in seen]
    return tuple(sorted(seen))


def _source_file(name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def _is_package(origin: str) -> bool:
    return Path(origin).name == "__init__.py"


def imported_names(path: Path, name: str) -> set[str]:
    """Every module name the source at `path` (module `name`) imports, in functions too, relative
    imports resolved; for `from m import x`, both `m` and `m.x` (x may be a submodule)."""
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = ".".join(here.split(".")[: len(here.split(".")) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return found


@cache
def _imported(origin: str, stamp: int, name: str, package: str) -> tuple[str, ...]:
    """Modules of `package` that the source at `origin` (module `name`, file time `stamp`) imports.
    A dotted name is looked up only below a package, so finding it never imports a module."""
    found = set()
    for candidate in imported_names(Path(origin), name):
        if not (candidate == package or candidate.startswith(package + ".")):
            continue
        parent = candidate.rpartition(".")[0]
        if parent and not _is_package(_source_file(parent) or ""):
            continue  # `from alignflow.models.loading import load_causal_lm`: a name, not a module
        if _source_file(candidate):
            found.add(candidate)
    found.discard(package)
    return tuple(sorted(found))


def stage_cache_key(*, stage: str, section_digest: str, input_digests: dict[str, str], code: str) -> str:
    payload = {
        "stage": stage,
        "config": section_digest,
        "inputs": dict(sorted(input_digests.items())),
        "code": code,
        "alignflow": __version__,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return f"{stage}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def write_manifest(folder: Path) -> str:
    """Record every file under `folder` (size and sha256); return the folder's content digest (of
    every file but the VOLATILE_FILES)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    lasting = {name: entry for name, entry in files.items() if Path(name).name not in VOLATILE_FILES}
    digest = hashlib.sha256(json.dumps(lasting, sort_keys=True).encode()).hexdigest()
    (folder / MANIFEST).write_text(json.dumps({"digest": digest, "files": files}, indent=1, sort_keys=True))
    return digest


def verify_manifest(folder: Path, expected_digest: str, mode: str = "sha256") -> str | None:
    """None if `folder` still holds exactly what its manifest lists; else why not."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return f"{folder / MANIFEST} is missing"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{folder / MANIFEST} is not valid JSON"
    if manifest.get("digest") != expected_digest:
        return f"{folder} holds other outputs than the cached result recorded"
    for name, entry in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != entry["size"]:
            return f"{path} changed size"
        if mode == "sha256" and sha256_file(path) != entry["sha256"]:
            return f"{path} changed content"
    return None


def gone_output(outputs: dict[str, str], out_dir: Path) -> str | None:
    """Why a cached result's outputs are unusable although its folder checks out: an absolute path
    outside that folder (so outside its manifest) that no longer exists, like a hub model's
    snapshot in the Hugging Face cache."""
    for name, value in outputs.items():
        path = Path(value)
        if path.is_absolute() and not path.is_relative_to(out_dir.resolve()) and not path.exists():
            return f"output {name} {value} is gone"
    return None


def read_cached_result(storage: Path, key: str):
    """(StageResult, None) for what Prefect persisted under `key`; (None, why not) otherwise."""
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore

    from alignflow.pipeline.stage import StageResult

    store = ResultStore(result_storage=LocalFileSystem(basepath=str(storage)))
    if not store.exists(key):
        return None, "not cached"
    try:
        result = store.read(key).result
    except Exception as error:  # a damaged record is a cache miss, not a crash  # noqa: BLE001
        return None, f"cached record {storage / key} is unreadable ({type(error).__name__})"
    if not isinstance(result, StageResult):
        return None, f"cached record {storage / key} is not a stage result"
    return result, None


def evict_cached_result(storage: Path, key: str) -> None:
    """Remove Prefect's record under `key` (its files no longer match), so the stage recomputes."""
    (storage / key).unlink(missing_ok=True)
