"""The LoRA adapter configuration of a training stage, for the architecture at hand.

`all-linear` is PEFT's own resolution (every linear layer but the output head) except on Mamba-style
models, where PEFT refuses adapters on the mixer's `out_proj` and `conv1d` (their fused kernels read
the plain weights) and raised for Falcon-H1 and Mamba: there alignflow names the other linear layers
itself, as LLaMA-Factory does for architectures with modules to leave out.
"""

from __future__ import annotations

# peft.tuners.tuners_utils._check_lora_target_modules_mamba: the model types and the modules it refuses.
MAMBA_MODEL_TYPES = frozenset({"falcon_h1", "mamba", "mamba2", "falcon_mamba", "nemotron_h"})
MAMBA_FUSED_MODULES = frozenset({"out_proj", "conv1d"})


def lora_targets(model, target_modules: list[str] | str) -> list[str] | str:
    """`target_modules` as PEFT should get them for `model` (names, or "all-linear")."""
    if target_modules != "all-linear" or getattr(model.config, "model_type", None) not in MAMBA_MODEL_TYPES:
        return target_modules
    import torch

    head = model.get_output_embeddings()
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and module is not head}
    return sorted(names - MAMBA_FUSED_MODULES)


def lora_config(settings, model):
    """PEFT's LoraConfig of a stage's `lora` section (alignflow.schemas.trainer.LoraSettings) for `model`."""
    from peft import LoraConfig

    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=lora_targets(model, settings.target_modules), task_type="CAUSAL_LM")
