"""The pipeline, as ../shared/DESIGN.md draws it: a data flow, a training flow and an evaluation
flow, each a few stage calls whose arguments are the upstream results.

A stage whose section is absent returns None and the stages reading it see None (an optional input),
so one graph serves every config. `alignflow.pipeline.runner` plans this graph (--only/--from/--refresh,
`alignflow stages`) and runs it: every call becomes a cached Prefect task run, and stages whose
inputs are ready run side by side (`execution.parallel_stages`): DPO, PPO, GRPO and RLOO after the reward model.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow

from alignflow.evaluation.icl_scaling import ICL_CATEGORIES
from alignflow.pipeline.config import load_config
from alignflow.pipeline.runner import PipelineRun, run_pipeline
from alignflow.schemas.config import PipelineConfig
from alignflow.schemas.stages.evaluate import EvaluateConfig
from alignflow.schemas.stages.pretrain import BaseModelSource
from alignflow.tasks.build import build
from alignflow.tasks.clean import clean
from alignflow.tasks.dpo import train_dpo
from alignflow.tasks.evaluate import evaluate
from alignflow.tasks.grpo import train_grpo
from alignflow.tasks.ppo import train_ppo
from alignflow.tasks.preferences import build_preferences
from alignflow.tasks.pretrain import pretrain
from alignflow.tasks.reward_model import train_reward_model
from alignflow.tasks.rloo import train_rloo
from alignflow.tasks.self_instruct import self_instruct
from alignflow.tasks.sft import train_sft
from alignflow.tasks.validate import validate_data


def data_flow(cfg: PipelineConfig, base):
    """Instruction data: seeds and templated datasets, Self-Instruct, cleaning, validation."""
    built = build(cfg.stages.build)
    generated = self_instruct(cfg.stages.self_instruct, base, built)
    cleaned = clean(cfg.stages.clean, built, generated)
    return validate_data(cfg.stages.validate_data, built, generated, cleaned)


@dataclass
class TunedModels:
    sft: object = None
    dpo: object = None
    ppo: object = None
    grpo: object = None
    rloo: object = None


def training_flow(cfg: PipelineConfig, base, data) -> TunedModels:
    """SFT, then preference pairs; a reward model and PPO/GRPO/RLOO on it, and DPO beside them
    (measured by the reward model too); then the sweep points of each method. The preference
    stages also read the instruction data: their optional SFT loss term replays it."""
    stages = cfg.stages
    sft = train_sft(stages.sft, base, data)
    pairs = build_preferences(stages.preferences, sft, data)
    reward = train_reward_model(stages.reward_model, sft, pairs)
    tuned = TunedModels(sft=sft, dpo=train_dpo(stages.dpo, sft, pairs, reward, data),
                        ppo=train_ppo(stages.ppo, sft, reward, pairs, data),
                        grpo=train_grpo(stages.grpo, sft, reward, pairs, data),
                        rloo=train_rloo(stages.rloo, sft, reward, pairs, data))
    sweep_flow(cfg, sft, pairs, reward, data)
    return tuned


def sweep_flow(cfg: PipelineConfig, sft, pairs, reward, data) -> None:
    """One more run of a preference method per `sweeps` value (dpo-beta-0.3, ...): the points of the
    reward-KL frontier the report draws from their held-out measures."""
    for label, section in cfg.sweep_points("dpo"):
        train_dpo.variant(label)(section, sft, pairs, reward, data)
    for method in (train_ppo, train_grpo, train_rloo):
        for label, section in cfg.sweep_points(method.name):
            method.variant(label)(section, sft, reward, pairs, data)


def evaluation_flow(cfg: PipelineConfig, base, tuned: TunedModels):
    """The few-shot sweep of the base model and every tuned one."""
    return evaluate(cfg.stages.evaluate, base, tuned.sft, tuned.dpo, tuned.ppo, tuned.grpo, tuned.rloo)


def scaling_flow(cfg: PipelineConfig) -> None:
    """Each pretrain sweep point (another model size or step budget: pretrain-model.hidden_size-64) and
    its scoring on the in-context learning tasks (evaluate-model.hidden_size-64): accuracy against k
    per size, the emergence the report draws beside the configured base model's curve."""
    for label, source, section in scaling_points(cfg):
        evaluate.variant(label)(section, pretrain.variant(label)(source))


def scaling_points(cfg: PipelineConfig) -> list[tuple[str, BaseModelSource, EvaluateConfig]]:
    """(label, base model source, evaluate section) of each pretrain sweep point: scored on the in-context
    learning categories, on the inputs that point's own corpus held out."""
    if cfg.stages.evaluate is None:
        return []
    return [(label, BaseModelSource(pretrain=point),
             cfg.stages.evaluate.model_copy(update={"categories": list(ICL_CATEGORIES),
                                                    "heldout_percent": point.corpus.heldout_percent}))
            for label, point in cfg.sweep_points("pretrain")]


def pipeline_graph(cfg: PipelineConfig):
    """End to end: base model, data, training, evaluation."""
    base = pretrain(cfg.base_source)
    data = data_flow(cfg, base)
    tuned = training_flow(cfg, base, data)
    results = evaluation_flow(cfg, base, tuned)
    scaling_flow(cfg)
    return results


@flow(name="alignflow-pipeline", log_prints=False)
def pipeline(config_path: str, only: str | None = None, from_stage: str | None = None,
             refresh: tuple[str, ...] = (), overrides: tuple[str, ...] = ()) -> PipelineRun:
    """Run the pipeline declared in `config_path` (see configs/*.yaml), with `overrides`
    (`stages.dpo.beta=0.2`, as `alignflow run --set` passes them) applied to it."""
    config = load_config(config_path, overrides)
    return run_pipeline(pipeline_graph, config, config_path, only=only, from_stage=from_stage, refresh=refresh,
                        overrides=overrides)
