"""Stage `pretrain`: provide the pipeline's base model.

Demo path: generate the synthetic few-shot corpus, train a byte-level BPE tokenizer, build a
tiny Llama and pretrain it on CPU. Real path (`base_model:` set): check the given local folder
(keyed on its files' fingerprint) or hub id (resolved at `base_model_revision` to its commit and
local snapshot, which every later stage loads) and pass it on; nothing is trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd

from alignflow.pipeline.caching import folder_fingerprint
from alignflow.pipeline.stage import ModelRef, StageOutput, StageRun, stage
from alignflow.progress import StepProgress
from alignflow.schemas.config import PipelineConfig
from alignflow.schemas.stages.pretrain import BaseModelSource, PretrainConfig
from alignflow.tracking.logged_models import CAUSAL_LM_TASK, log_model_folder
from alignflow.tracking.plots import line_plot
from alignflow.tracking.runs import log_table_input


def pretrain_key(source: BaseModelSource, config: PipelineConfig) -> dict:
    """A given base model keys on its name and (for a folder) its files or (for a hub id) the asked
    revision; the demo model on its recipe."""
    if source.base_model:
        local = Path(source.base_model).expanduser()
        fingerprint = folder_fingerprint(local) if local.is_dir() else None
        revision = {"revision": source.base_model_revision} if source.base_model_revision else {}
        return {"base_model": source.base_model, "fingerprint": fingerprint, **revision}
    return {"seed": config.seed, **source.pretrain.model_dump(mode="json")}


def write_corpus(rows: list[dict], path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def build_demo_base_model(settings: PretrainConfig, config: PipelineConfig, out_dir: Path,
                          name: str = "pretrain") -> StageOutput:
    """Corpus -> tokenizer -> tiny Llama -> pretraining; saves model/ (safetensors + tokenizer).
    `settings` is the stage's section (a sweep point's, for pretrain-model.hidden_size-64);
    `name` names the logged model."""
    # Heavy ML imports stay inside the function: a fully cached run never pays for them.
    import torch

    from alignflow.demo.corpus import generate_streams
    from alignflow.demo.model import build_llama
    from alignflow.demo.pretraining import LoopSettings, evaluate_loss, pack_blocks, train_causal_lm
    from alignflow.demo.tokenizer import train_tokenizer
    from alignflow.models.loading import stage_placement
    from alignflow.tracking.runs import log_models

    seed = config.seed
    corpus_cfg, train_cfg = settings.corpus, settings.training
    rows = list(generate_streams(**corpus_cfg.model_dump(), seed=seed))  # the section names its arguments
    corpus_path = out_dir / "corpus.jsonl"
    write_corpus(rows, corpus_path)
    log_table_input(pd.DataFrame(rows), corpus_path, "demo-corpus", context="pretrain")

    tokenizer = train_tokenizer((row["text"] for row in rows), settings.tokenizer.vocab_size)
    token_lists = [tokenizer(row["text"])["input_ids"] for row in rows]
    blocks = pack_blocks(token_lists, tokenizer.bos_token_id, train_cfg.seq_len)
    n_val = max(1, int(len(blocks) * train_cfg.validation_fraction)) if train_cfg.validation_fraction else 0
    train_blocks, val_blocks = blocks[n_val:], blocks[:n_val]

    placement = stage_placement(config)
    model = build_llama(tokenizer, seed=seed, **settings.model.model_dump()).to(
        placement.torch_device, getattr(torch, placement.train_dtype))
    log_models(base=model)
    n_params = sum(p.numel() for p in model.parameters())
    mlflow.log_params({"n_parameters": n_params, "corpus_tokens": int(blocks.numel()), "vocab_size": len(tokenizer)})

    history: list[tuple[int, float]] = []
    with StepProgress("pretrain", total=train_cfg.max_steps) as progress:
        def on_log(step: int, metrics: dict[str, float]) -> None:
            mlflow.log_metrics(metrics, step=step)
            history.append((step, metrics["train_loss"]))
            progress.update(step, loss=metrics["train_loss"], tok_s=metrics["tokens_per_second"])

        fields = set(LoopSettings.__dataclass_fields__) - {"seed"}
        loop = LoopSettings(seed=seed, **train_cfg.model_dump(include=fields))
        final = train_causal_lm(model, train_blocks, loop, on_log)

    metrics = {"final_train_loss": final["train_loss"], "tokens_per_second": final["tokens_per_second"]}
    if n_val:
        metrics["validation_loss"] = evaluate_loss(model, val_blocks, train_cfg.batch_size)
    model_dir = out_dir / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    curve = line_plot(out_dir / "loss_curve.png", "pretraining loss", "step", "train loss",
                      {"train": history})
    mlflow.log_artifact(str(curve))
    log_model_folder(model_dir, task=CAUSAL_LM_TASK, weights=config.tracking.log_weights, name=name,
                     model_type="pretrain")
    mlflow.log_artifact(str(corpus_path), artifact_path="data")
    summary = {"n_parameters": n_params, "vocab_size": len(tokenizer), "corpus_streams": len(rows)}
    return StageOutput(outputs={"model": str(model_dir), "corpus": str(corpus_path)}, metrics=metrics,
                       summary=summary)


def reference_base_model(name_or_path: str, out_dir: Path, revision: str | None = None) -> StageOutput:
    """Check that a local folder or hub id holds a causal LM (weights' headers, config, tokenizer)
    without loading its weights; record it. A hub id is taken at `revision` into the local Hugging
    Face cache first: its snapshot folder is the model the later stages load, and its commit goes
    into base_model.json, part of this stage's output digest: when `--refresh pretrain` finds a new
    commit at the revision, every later stage recomputes; the same commit keeps them cached."""
    from alignflow.models.loading import check_causal_lm, pinned_model

    model, commit = pinned_model(name_or_path, revision)
    pinned = {"revision": revision or "main", "commit": commit} if commit else {}
    record = {**check_causal_lm(model), "base_model": name_or_path, **pinned}
    (out_dir / "base_model.json").write_text(json.dumps(record, indent=1))
    mlflow.log_dict(record, "base_model.json")
    if pinned:
        mlflow.log_params({"base_model.revision": pinned["revision"], "base_model.commit": pinned["commit"]})
    return StageOutput(outputs={"model": model}, summary=record)


@stage("pretrain", result=ModelRef, key=pretrain_key, loads_models=True)
def pretrain(cfg: BaseModelSource, run: StageRun) -> StageOutput:
    """Build the demo base model, or reference base_model."""
    if cfg.base_model:
        return reference_base_model(cfg.base_model, run.out_dir, cfg.base_model_revision)
    return build_demo_base_model(cfg.pretrain, run.config, run.out_dir, run.name)
