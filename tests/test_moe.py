"""Mixture-of-experts models through TRL's trainers: a configuration that counts its experts as
`num_local_experts` only (Granite 4's hybrid, Granite MoE, Phi-3.5-MoE, Llama 4) trains with the
load-balancing loss, and its saved config.json is what transformers itself writes."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from datasets import Dataset
from transformers import AutoConfig, GraniteMoeHybridConfig, GraniteMoeHybridForCausalLM, MixtralConfig

from alignflow.models.loading import alias_expert_count, load_causal_lm, resolve_placement, save_model
from alignflow.schemas.stages.sft import SFTStageConfig
from alignflow.tasks.sft import trainer_arguments
from alignflow.training.sft_trainer import AlignflowSFTTrainer


@pytest.fixture(scope="module")
def granite_hybrid(tiny_tokenizer, tmp_path_factory):
    """A random two-layer Granite 4 style model: one Mamba-2 layer, one attention layer, 2 experts."""
    folder = tmp_path_factory.mktemp("granite-hybrid")
    config = GraniteMoeHybridConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, layer_types=["mamba", "attention"], mamba_n_heads=2,
        mamba_d_head=32, mamba_d_state=16, mamba_chunk_size=16, num_local_experts=2, num_experts_per_tok=1,
        shared_intermediate_size=32, pad_token_id=tiny_tokenizer.pad_token_id, bos_token_id=None,
        eos_token_id=tiny_tokenizer.eos_token_id)
    torch.manual_seed(0)
    GraniteMoeHybridForCausalLM(config).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def test_sft_trains_a_granite_hybrid_with_the_load_balancing_loss(granite_hybrid, tiny_tokenizer, tmp_path):
    """First in the module: the alias, once made, holds for the rest of the process."""
    model = load_causal_lm(str(granite_hybrid), resolve_placement("cpu"), trainable=True)
    examples = [{"input_ids": [5, 6, 7, 8, 9, 10], "labels": [-100, -100, 7, 8, 9, 10]}] * 8
    settings = SFTStageConfig(max_steps=2, batch_size=2, save_steps=100, logging_steps=1, warmup_steps=0)
    trainer = AlignflowSFTTrainer(model=model, args=trainer_arguments(settings, tmp_path / "out", 0, False),
                                  train_dataset=Dataset.from_list(examples), processing_class=tiny_tokenizer)
    assert trainer.aux_loss_enabled, "TRL adds the router's load-balancing loss for this model"
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "aux_loss" in entry]
    assert logged and all(math.isfinite(entry["aux_loss"]) and entry["aux_loss"] > 0 for entry in logged)

    # TRL switched the router outputs on for training; the saved model generates without them
    assert model.config.output_router_logits
    save_model(model, tiny_tokenizer, tmp_path / "sft")
    assert json.loads((tmp_path / "sft" / "config.json").read_text())["output_router_logits"] is False
    again = load_causal_lm(str(tmp_path / "sft"), resolve_placement("cpu"))
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.padding_side = "left"
    batch = tokenizer(["1+1=", "hello world, a short line"], return_tensors="pt", padding=True)
    new = again.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert new.shape == (2, batch["input_ids"].shape[1] + 3)


def test_the_expert_count_answers_to_both_names_and_is_saved_once(granite_hybrid, tmp_path):
    config = AutoConfig.from_pretrained(granite_hybrid)
    alias_expert_count(config)
    assert config.num_experts == config.num_local_experts == 2
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["num_local_experts"] == 2 and "num_experts" not in saved and "attribute_map" not in saved
    assert MixtralConfig.attribute_map == {"num_experts": "num_local_experts"}, "the alias transformers declares"
