"""Defaults that keep Prefect's state inside the project, set before Prefect is imported."""

from __future__ import annotations

import os
from pathlib import Path


def configure_environment(root: Path | None = None) -> None:
    """Point Prefect's home and result storage at <root>/.alignflow unless the user chose otherwise."""
    root = (root or Path.cwd()).resolve()
    defaults = {
        "PREFECT_HOME": str(root / ".alignflow" / "prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(root / ".alignflow" / "cache"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
