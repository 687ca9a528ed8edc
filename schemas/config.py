"""Typed pipeline configuration, declared in YAML and validated here: the top-level sections
(tracking, cache, execution), one section per stage (their classes in alignflow.schemas.stages,
one module per stage as in tasks/) and the pipeline itself.

Every model is frozen and forbids unknown keys, so a typo is an error naming its key path
rather than a silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from alignflow.schemas.stages.build import BuildConfig
from alignflow.schemas.stages.clean import CleanConfig
from alignflow.schemas.stages.dpo import DPOStageConfig
from alignflow.schemas.stages.evaluate import EvaluateConfig
from alignflow.schemas.stages.group_rl import GroupRLStageConfig
from alignflow.schemas.stages.ppo import PPOStageConfig
from alignflow.schemas.stages.preferences import PreferencesConfig
from alignflow.schemas.stages.pretrain import BaseModelSource, PretrainConfig
from alignflow.schemas.stages.reward_model import RewardModelConfig
from alignflow.schemas.stages.self_instruct import SelfInstructConfig
from alignflow.schemas.stages.sft import SFTStageConfig
from alignflow.schemas.stages.validate import ValidateConfig
from alignflow.schemas.trainer import Section


class TrackingConfig(Section):
    uri: str | None = Field(
        None,
        description="MLflow tracking URI. Unset: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db.",
    )
    experiment: str | None = Field(None, description="MLflow experiment name. Unset: the pipeline's name.")
    log_weights: Literal["copy", "reference"] = Field(
        "copy",
        description="How each trained model is logged as an MLflow model: copy (transformers flavour, the weights "
        "stored in the MLflow store; loads anywhere the store is reachable) or reference (a pyfunc model pointing "
        "at the stage's model folder, no second copy of multi-GB checkpoints; loads where that folder is).",
    )


class CacheConfig(Section):
    dir: str = Field(".alignflow/cache", description="Prefect result storage: one file per stage cache key.")
    verify: str = Field(
        "sha256",
        pattern="^(sha256|size)$",
        description="How a cached stage's files are checked before reuse: full content hash, or sizes only "
        "(for multi-GB checkpoints).",
    )


class ExecutionConfig(Section):
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
        description="Where every stage's models live: auto (the current CUDA device when there is one, else "
        "the CPU), cpu, cuda or cuda:N. Logged with each model's dtype as params of every stage.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Dtype frozen models (reference, reward, judge, evaluation) are loaded in; trained models "
        "keep float32 weights unless bfloat16 (then trained in bfloat16). auto: bfloat16 on a GPU that "
        "computes in it natively (NVIDIA Ampere or newer, AMD), else float32.",
    )
    launcher: Literal["inline", "accelerate"] = Field(
        "inline",
        description="How training stages (sft, reward_model, dpo, grpo, rloo, ppo) run: inline, in the stage's own "
        "process on one device; accelerate, as one distributed job of num_processes processes (torchrun on "
        "CPUs, `accelerate launch` on GPUs) whose main process alone writes MLflow and the model folder.",
    )
    stage_launchers: dict[str, Literal["inline", "accelerate"]] = Field(
        {}, description="Per-stage override of launcher, e.g. {sft: accelerate, dpo: inline}."
    )
    num_processes: int = Field(2, ge=1, description="Processes of a launched job on each machine (its GPUs, or "
                               "CPU workers), as torchrun's nproc_per_node.")
    num_machines: int = Field(1, ge=1, description="Machines of a launched job. Several need accelerate's "
                              "multi-node settings (machine_rank, main_process_ip) in accelerate_config.")
    accelerate_config: str | None = Field(
        None, description="accelerate's own YAML (DDP, FSDP or DeepSpeed settings), passed to `accelerate launch` "
        "as --config_file; its values win over num_processes and num_machines."
    )
    task_runner: Literal["inline", "thread", "process", "dask"] = Field(
        "inline",
        description="How data stages fan out their work (preference sampling over prompt shards): inline, in "
        "the stage's process; thread, process or dask, one Prefect task per shard on that task runner (dask: "
        "a local cluster of data_workers processes, or the scheduler at dask_address). Rows equal inline ones.",
    )
    data_workers: int = Field(2, ge=1, description="Shards (and threads, processes or local Dask workers) of a "
                              "fanned-out data stage.")
    dask_address: str | None = Field(None, description="Scheduler of an existing Dask cluster, e.g. "
                                     "tcp://10.0.0.5:8786 (task_runner: dask). Unset: a local cluster.")
    parallel_stages: int = Field(
        1,
        ge=1,
        description="Stages that may run at once when their inputs are ready (DPO, PPO, GRPO and RLOO after the reward model). "
        "1: one after another in this process. More: each stage in its own worker process (own RNG); with "
        "execution.device auto and several GPUs each such stage gets the least busy GPU. Never part of a cache key.",
    )


    @model_validator(mode="after")
    def _launchable_stages(self) -> ExecutionConfig:
        unknown = sorted(set(self.stage_launchers) - set(LAUNCHABLE_STAGES))
        if unknown:
            raise ValueError(f"stage_launchers: {unknown} cannot be launched as a distributed job; launchable "
                             f"stages: {list(LAUNCHABLE_STAGES)}")
        return self

    def launcher_of(self, stage: str) -> str:
        if stage not in LAUNCHABLE_STAGES:
            return "inline"
        return self.stage_launchers.get(stage, self.launcher)


LAUNCHABLE_STAGES = ("sft", "reward_model", "dpo", "grpo", "rloo", "ppo")
PREFERENCE_METHODS = ("dpo", "ppo", "grpo", "rloo")  # the policies of the reward-KL frontier
SWEEPABLE_STAGES = ("pretrain", *PREFERENCE_METHODS)  # pretrain: model sizes for the in-context learning curves


def _swept(section: Section, name: str, value: Any) -> Section:
    """`section` with field `name` (a dotted path into nested sections: model.hidden_size) set to
    `value`, validated, and not registered (a sweep point)."""
    data = section.model_dump()
    *parents, leaf = name.split(".")
    inner = data
    for part in parents:
        inner = inner[part]
    inner[leaf] = value
    if "register_model" in type(section).model_fields:
        data["register_model"] = False
    return type(section).model_validate(data)


def _has_field(section: Section, name: str) -> bool:
    """Whether the dotted path `name` names a field of `section` (through nested sections)."""
    target: Any = section
    for part in name.split("."):
        if not isinstance(target, BaseModel) or part not in type(target).model_fields:
            return False
        target = getattr(target, part)
    return True


class StagesConfig(Section):
    """One section per stage; a stage whose section is absent does not run."""

    pretrain: PretrainConfig | None = Field(
        None, description="Pretrain the demo base model. Exclusive with top-level base_model."
    )
    build: BuildConfig | None = Field(None, description="Build instruction data from seeds and datasets.")
    self_instruct: SelfInstructConfig | None = Field(
        None, description="Generate instruction data from the build pool with the generator (and teacher) model."
    )
    clean: CleanConfig | None = Field(None, description="Normalise, filter and deduplicate instruction data.")
    validate_data: ValidateConfig | None = Field(
        None, alias="validate", description="Validate the instruction data, write the data card and the splits."
    )
    sft: SFTStageConfig | None = Field(None, description="Supervised fine-tuning of the base model.")
    preferences: PreferencesConfig | None = Field(
        None, description="Sample responses from the SFT model, annotate them, and build preference pairs."
    )
    reward_model: RewardModelConfig | None = Field(None, description="Train a Bradley-Terry reward model.")
    dpo: DPOStageConfig | None = Field(None, description="Direct preference optimisation of the SFT model.")
    ppo: PPOStageConfig | None = Field(None, description="PPO against the reward model with a KL penalty.")
    grpo: GroupRLStageConfig | None = Field(None, description="GRPO (TRL) against the reward model.")
    rloo: GroupRLStageConfig | None = Field(None, description="RLOO (TRL) against the reward model.")
    evaluate: EvaluateConfig | None = Field(
        None, description="Few-shot evaluation of every model the pipeline produced (tasks x k)."
    )


class PipelineConfig(Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Pipeline name (experiment, registry).")
    seed: int = Field(0, description="Seed for every stage unless a stage overrides it.")
    base_model: str | None = Field(
        None,
        description="Hub id or local folder of the model to post-train. Unset: the pretrain stage builds one.",
    )
    base_model_revision: str | None = Field(
        None,
        description="Branch, tag or commit of a hub base_model (unset: main). The pretrain stage resolves the hub "
        "id at this revision to its commit and local snapshot; every later stage loads that snapshot, and the "
        "commit is recorded, so a run never mixes revisions.",
    )
    chat_template: str | None = Field(
        None,
        description="Jinja chat template for the base model's tokenizer, inline or the path of a .jinja file. "
        "Unset: the tokenizer's own; a tokenizer without one gets alignflow's default (role labels, its eos "
        "closing each assistant turn).",
    )
    artifacts_dir: str = Field("artifacts", description="Folder for stage outputs (artifacts/<stage>/<cache key>/).")
    tracking: TrackingConfig = TrackingConfig()
    cache: CacheConfig = CacheConfig()
    execution: ExecutionConfig = ExecutionConfig()
    stages: StagesConfig = StagesConfig()
    sweeps: dict[str, dict[str, list[Any]]] = Field(
        {},
        description="Extra runs of a stage with one field changed, e.g. {dpo: {beta: [0.05, 0.3]}, ppo: "
        "{kl_coef: [0.2]}, pretrain: {model.num_hidden_layers: [2]}}: each value is one more run of the stage "
        "(named dpo-beta-0.3: its own cache key, folder and MLflow run; not registered), beside the configured "
        "one. Preference methods' points are drawn on the reward-KL frontier; pretrain's points (dotted paths "
        "into its section) are each scored on the recognition and learning tasks: accuracy against k per model.",
    )

    def sweep_points(self, stage: str) -> list[tuple[str, Section]]:
        """(label, section) of each extra run `sweeps` asks of `stage`: label `<field>-<value>`."""
        section = getattr(self.stages, stage)
        return [(f"{name}-{value}", _swept(section, name, value)) for name, values in self.sweeps.get(stage, {}).items()
                for value in values]

    @property
    def base_source(self) -> BaseModelSource:
        """The pretrain stage's section (base_model, or stages.pretrain)."""
        return BaseModelSource(base_model=self.base_model, base_model_revision=self.base_model_revision,
                               pretrain=self.stages.pretrain)

    @model_validator(mode="after")
    def _one_base_model(self) -> PipelineConfig:
        if self.base_model and self.stages.pretrain:
            raise ValueError("set either base_model or stages.pretrain, not both")
        if not self.base_model and not self.stages.pretrain:
            raise ValueError("set base_model (hub id or folder) or stages.pretrain (build the demo model)")
        if self.base_model_revision and not self.base_model:
            raise ValueError("base_model_revision is the revision of a hub base_model; base_model is not set")
        if self.base_model_revision and Path(self.base_model).expanduser().is_dir():
            raise ValueError(f"base_model_revision: base_model {self.base_model!r} is a local folder, which has no "
                             "revisions (its files are fingerprinted instead)")
        return self

    @model_validator(mode="after")
    def _sweeps_valid(self) -> PipelineConfig:
        for stage, fields in self.sweeps.items():
            if stage not in SWEEPABLE_STAGES:
                raise ValueError(f"sweeps.{stage}: only {', '.join(SWEEPABLE_STAGES)} can be swept")
            section = getattr(self.stages, stage)
            if section is None:
                raise ValueError(f"sweeps.{stage}: stages.{stage} is not configured")
            for name, values in fields.items():
                if not _has_field(section, name):
                    raise ValueError(f"sweeps.{stage}.{name}: stages.{stage} has no field {name}")
                if not values:
                    raise ValueError(f"sweeps.{stage}.{name}: give at least one value")
                for value in values:
                    try:
                        _swept(section, name, value)
                    except ValidationError as error:
                        reason = error.errors()[0]["msg"]
                        raise ValueError(f"sweeps.{stage}.{name}: {value!r} is not valid ({reason})") from None
        return self

    @model_validator(mode="after")
    def _ppo_batches_shard(self) -> PipelineConfig:
        """A launched PPO job splits every rollout and minibatch evenly over its processes."""
        ppo, execution = self.stages.ppo, self.execution
        if ppo is None or execution.launcher_of("ppo") != "accelerate":
            return self
        processes = execution.num_processes * execution.num_machines
        for name in ("batch_size", "mini_batch_size"):
            if getattr(ppo, name) % processes:
                raise ValueError(f"stages.ppo.{name} ({getattr(ppo, name)}) must be a multiple of the launched "
                                 f"job's {processes} processes (execution.num_processes x num_machines)")
        return self
