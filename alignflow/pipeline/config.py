"""Load a pipeline YAML file into the typed config, with errors that name file and key path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from alignflow.errors import ConfigError
from alignflow.schemas.config import PipelineConfig

__all__ = ["ConfigError", "load_config", "parse_config", "section_digest", "flatten_params"]


def _key_path(loc: tuple) -> str:
    parts = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts) or "(top level)"


def format_validation_error(source: str, error: ValidationError) -> str:
    lines = [f"{source}: {error.error_count()} problem(s) in the config:"]
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {_key_path(item['loc'])}: {message}")
    return "\n".join(lines)


def parse_config(data: object, source: str = "<config>") -> PipelineConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(source, error)) from None


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    return parse_config(data, str(path))


def section_digest(section: object) -> str:
    """Stable digest of a config section (pydantic model, dict or scalar)."""
    if hasattr(section, "model_dump"):
        section = section.model_dump(mode="json")
    payload = json.dumps(section, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def flatten_params(section: object, prefix: str = "") -> dict[str, str]:
    """Flatten a config section into MLflow params: {'training.learning_rate': '0.003', ...}."""
    if hasattr(section, "model_dump"):
        section = section.model_dump(mode="json")
    flat: dict[str, str] = {}
    if isinstance(section, dict):
        for key, value in section.items():
            flat.update(flatten_params(value, f"{prefix}{key}."))
        return flat
    flat[prefix.rstrip(".")] = json.dumps(section, ensure_ascii=False) if isinstance(section, list) else str(section)
    return flat
