"""LoRA's all-linear on every architecture: PEFT's own choice, except on Mamba-style mixers, whose
fused out_proj and conv1d PEFT refuses (Falcon-H1 and Mamba failed with all-linear before)."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

from alignflow.schemas.trainer import LoraSettings
from alignflow.training.lora import MAMBA_FUSED_MODULES, lora_config, lora_targets

SHAPES = {
    "falcon_h1": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, mamba_n_heads=2, mamba_d_head=32, mamba_d_ssm=64, mamba_d_state=8,
                      mamba_chunk_size=8),
    "mamba": dict(hidden_size=32, num_hidden_layers=2, state_size=8),
    "llama": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1),
}


def tiny(kind: str):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, vocab_size=64, **SHAPES[kind]))


def test_other_architectures_keep_peft_s_all_linear_and_named_targets_stay_as_given():
    assert lora_targets(tiny("llama"), "all-linear") == "all-linear"
    assert lora_targets(tiny("mamba"), ["x_proj"]) == ["x_proj"]


@pytest.mark.parametrize("kind", ["falcon_h1", "mamba"])
def test_all_linear_on_a_mamba_style_model_adapts_every_linear_layer_peft_accepts(kind):
    model = tiny(kind)
    targets = lora_targets(model, "all-linear")
    assert targets and not set(targets) & MAMBA_FUSED_MODULES and "lm_head" not in targets
    adapted = get_peft_model(model, lora_config(LoraSettings(), model))
    names = {name.rsplit(".", 1)[-1] for name, module in adapted.named_modules() if hasattr(module, "lora_A")}
    assert names == set(targets), "every named layer has an adapter"
    assert adapted(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 64)
