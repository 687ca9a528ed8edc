"""What a stage is: one typed function over its config section and its upstream results.

    @stage("dpo", loads_models=True)
    def train_dpo(cfg: DPOStageConfig, sft: ModelRef, preferences: PreferenceData, run: StageRun) -> StageOutput:

The parameters between `cfg` and `run` are the stage's inputs, by the name of the stage that
produces them; one with a default (`= None`) is read only when that stage is configured. A flow
calls the decorated stage with the section and the upstream results (`train_dpo(cfg.stages.dpo,
sft, prefs)`); alignflow.pipeline.runner turns the call into a cached Prefect task run and hands back the
stage's result (a StageResult of the annotated kind). What the function returns is a StageOutput:
named output paths (inside `run.out_dir`), final metrics and a summary.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from alignflow.schemas.config import PipelineConfig


class StageResult(BaseModel):
    """A stage's result as the pipeline passes it on and Prefect persists it under the cache key:
    where its outputs are, their digest, its metrics and the MLflow run that computed it."""

    model_config = ConfigDict(frozen=True)

    stage: str
    cache_key: str
    out_dir: str
    outputs: dict[str, str]
    digest: str
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    summary: dict[str, Any] = {}
    mlflow_run_id: str


class ModelRef(StageResult):
    """A stage result holding a model folder (or hub id) at `outputs["model"]`."""

    @property
    def model(self) -> str:
        return self.outputs["model"]


class InstructionData(StageResult):
    """Instruction rows (build, self_instruct, clean, validate); rejected rows at `outputs["rejected"]`."""


class PreferenceData(StageResult):
    """Preference pairs (`pairs_train`, `pairs_heldout`) and held-out prompts (`eval_prompts`)."""


class EvalResults(StageResult):
    """The few-shot results table (`results`) and per-sample records (`samples`)."""


@dataclass(frozen=True)
class StageRun:
    """What a stage function reads besides its section and inputs; it writes only under `out_dir`.
    MLflow's active run is the stage's child run while the function executes."""

    name: str
    config: PipelineConfig
    section: Any
    upstream: dict[str, StageResult]
    out_dir: Path
    method: str = ""  # the stage this is a run of: its name, or a sweep point's stage (dpo for dpo-beta-0.3)

    def __post_init__(self) -> None:
        if not self.method:
            object.__setattr__(self, "method", self.name)


@dataclass
class StageOutput:
    outputs: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def default_key(section: BaseModel, config: PipelineConfig) -> dict:
    """What determines a stage's output besides its inputs and code: its section and the pipeline's seed."""
    return {"seed": config.seed, **section.model_dump(mode="json")}


# The engine (alignflow.pipeline.runner) that a stage call goes to while a pipeline is planned or run.
ENGINE: ContextVar[Any] = ContextVar("alignflow_engine", default=None)


@dataclass(frozen=True, eq=False)
class Stage:
    """A unit a user reruns. `key(section, config)` gives what, beyond the inputs' digests and the
    code, determines the output (files it reads by content, say). A stage that loads models also
    keys on execution.device/dtype and chat_template."""

    name: str
    fn: Callable[..., StageOutput]
    result: type[StageResult] = StageResult
    key: Callable[[Any, PipelineConfig], dict] = default_key
    loads_models: bool = False
    method: str = ""  # a variant's stage (see `variant`); empty for the stage itself

    @property
    def base(self) -> str:
        return self.method or self.name

    def variant(self, label: str) -> Stage:
        """This stage under the name `<stage>-<label>` (e.g. dpo-beta-0.3), so that one graph can run it
        once per config: each variant has its own cache key, folder, Prefect task run and MLflow run."""
        return Stage(name=f"{self.base}-{label}", fn=self.fn, result=self.result, key=self.key,
                     loads_models=self.loads_models, method=self.base)

    def __call__(self, section: Any, *inputs: StageResult | None) -> Any:
        engine = ENGINE.get()
        if engine is None:
            raise RuntimeError(f"stage {self.name} was called outside a pipeline run; use alignflow.pipeline.runner "
                               "(run_pipeline, plan_pipeline) or call_stage to run it")
        return engine.call(self, section, dict(zip(self.inputs, inputs, strict=False)))

    def __reduce__(self):  # pickled by reference (worker processes import the stage's module)
        label = self.name.removeprefix(f"{self.method}-") if self.method else None
        return (import_stage, (self.fn.__module__, self.fn.__name__, label))

    @property
    def inputs(self) -> tuple[str, ...]:
        """Upstream stage names, in the order the function takes them."""
        return tuple(list(self._parameters())[1:-1])

    @property
    def optional_inputs(self) -> tuple[str, ...]:
        parameters = self._parameters()
        return tuple(name for name in self.inputs if parameters[name].default is not inspect.Parameter.empty)

    @property
    def modules(self) -> tuple[str, ...]:
        """Every alignflow module this stage's code imports, transitively (its code digest)."""
        from alignflow.pipeline.caching import module_closure

        return module_closure({self.fn.__module__, self.key.__module__})

    def _parameters(self) -> dict[str, inspect.Parameter]:
        return dict(inspect.signature(self.fn).parameters)


def import_stage(module: str, name: str, variant: str | None = None) -> Stage:
    found = getattr(importlib.import_module(module), name)
    return found.variant(variant) if variant else found


def stage(name: str, *, result: type[StageResult] = StageResult, key: Callable[[Any, PipelineConfig], dict] = default_key,
          loads_models: bool = False) -> Callable[[Callable[..., StageOutput]], Stage]:
    """Make `fn(cfg, *inputs, run)` a pipeline stage whose result is a `result`; see the module docstring."""

    def wrap(fn: Callable[..., StageOutput]) -> Stage:
        parameters = list(inspect.signature(fn).parameters)
        if len(parameters) < 2 or parameters[-1] != "run":
            raise TypeError(f"stage {name}: {fn.__name__} must take (cfg, *inputs, run)")
        return Stage(name=name, fn=fn, result=result, key=key, loads_models=loads_models)

    return wrap
