"""What a stage is: a named pure function over its config section and upstream results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignflow.schemas.config import PipelineConfig


@dataclass(frozen=True)
class StageContext:
    """Everything a stage function may read. It writes only under `out_dir`.

    `upstream` maps each upstream stage name to its result (see StageOutput and runner.run_stage).
    MLflow's active run is the stage's child run while the function executes.
    """

    name: str
    config: PipelineConfig
    section: Any
    upstream: dict[str, dict]
    out_dir: Path


@dataclass
class StageOutput:
    """What a stage function returns: named output paths (inside out_dir) and final metrics."""

    outputs: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """A unit a user reruns.

    `section` picks out of the pipeline config everything that determines this stage's output
    (None: the stage is not configured and does not run). The source of the modules that `run`'s
    and `section`'s modules import (alignflow.caching.module_closure) is part of the cache key.
    `upstream` stages must be configured for this stage to run;
    `optional_upstream` ones are read only when configured.
    """

    name: str
    upstream: tuple[str, ...]
    section: Callable[[PipelineConfig], Any]
    run: Callable[[StageContext], StageOutput]
    description: str = ""
    optional_upstream: tuple[str, ...] = ()  # read when configured (e.g. self_instruct before clean)
    loads_models: bool = False  # execution.device/dtype and chat_template then belong to its cache key

    @property
    def modules(self) -> tuple[str, ...]:
        """Every alignflow module this stage's code imports, transitively (its code digest)."""
        from alignflow.caching import module_closure

        return module_closure({self.run.__module__, self.section.__module__})

    def inputs(self, active: set[str] | dict) -> tuple[str, ...]:
        """Upstream stages this stage reads in a pipeline where `active` stages run."""
        return self.upstream + tuple(name for name in self.optional_upstream if name in active)
