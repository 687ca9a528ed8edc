"""Stage cache keys, artifact manifests and lookups in Prefect's result storage.

A stage's key hashes everything that determines its output: its config section, the digests
of its inputs, the source of its code and alignflow's version. Prefect persists each stage's
result under that key; the manifest written beside the stage's files lets a later run tell a
usable cached result from one whose files were deleted or damaged (a miss, never a crash).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from alignflow import __version__

MANIFEST = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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
    """Record every file under `folder` (size and sha256); return the folder's content digest."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
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


def read_cached_result(storage: Path, key: str) -> tuple[dict | None, str | None]:
    """(result, None) for what Prefect persisted under `key`; (None, why not) otherwise."""
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore

    store = ResultStore(result_storage=LocalFileSystem(basepath=str(storage)))
    if not store.exists(key):
        return None, "not cached"
    try:
        result = store.read(key).result
    except Exception as error:  # a damaged record is a cache miss, not a crash  # noqa: BLE001
        return None, f"cached record {storage / key} is unreadable ({type(error).__name__})"
    if not isinstance(result, dict) or "digest" not in result:
        return None, f"cached record {storage / key} is not a stage result"
    return result, None
