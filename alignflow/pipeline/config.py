"""Load a pipeline YAML file into the typed config, with errors that name file and key path."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError

from alignflow.errors import ConfigError
from alignflow.schemas.config import PipelineConfig

__all__ = ["ConfigError", "apply_overrides", "load_config", "parse_config", "section_digest", "flatten_params"]


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


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """`key.path=value` assignments on a copy of the parsed file, before validation (Hydra's and
    TRL's command-line overrides): the value is read as YAML (0.2, true, [1, 2], null, text), a
    missing mapping on the path is created, and validation then checks the key and the type."""
    data = copy.deepcopy(data)
    for override in overrides:
        path, equals, text = override.partition("=")
        keys = path.strip().split(".")
        if not equals or not all(keys):
            raise ConfigError(f"--set {override}: expected KEY.PATH=VALUE, e.g. stages.dpo.beta=0.2")
        try:
            value = yaml.safe_load(text) if text.strip() else text
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {override}: the value is not YAML ({getattr(error, 'problem', error)})") from None
        node = data
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                where = ".".join(keys[:depth + 1])
                raise ConfigError(f"--set {override}: {where} is {child!r}, not a mapping of keys")
            node = child
        node[keys[-1]] = value
    return data


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> PipelineConfig:
    """Read and validate a pipeline YAML file, with `overrides` (`apply_overrides`) applied first."""
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
    if not overrides:
        return parse_config(data, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return parse_config(apply_overrides(data, overrides), f"{path} with --set {' --set '.join(overrides)}")


def effective_config_text(config: PipelineConfig) -> str:
    """The validated config as YAML, defaults filled in: what a run with overrides actually used."""
    return yaml.safe_dump(config.model_dump(mode="json"), allow_unicode=True, sort_keys=False)


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
