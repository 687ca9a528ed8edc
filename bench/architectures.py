"""Every stage on tiny random models of many architectures a user may bring (`base_model:`), one
`alignflow run` each, as tests/test_foreign_models.py does for its four kinds. Each model gets the
same ChatML byte-level BPE tokenizer (trained on the project's data), so differences come from the
architecture: its cache (attention, sliding window, convolution, SSM), its score head (transformers'
sequence classifier or alignflow's, alignflow/models/score_head.py), its quirks (multipliers,
soft-capping, parallel blocks). Usage:

    .venv/bin/python bench/architectures.py [--lora] [granite gemma3_text ...]   # default: the list below

`--lora` runs SFT with LoRA adapters on all-linear layers instead of full fine-tuning.

Prints one row per architecture: exit code, seconds, whether transformers has a score head for it,
and the error line of a failed run. CPU, float32, about 20-30 s an architecture.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURES = ["llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3_text", "phi3", "olmo2", "granite",
                 "cohere2", "gpt_neox", "opt", "lfm2", "mixtral", "qwen3_moe", "granitemoehybrid", "falcon_h1",
                 "mamba"]
SIZES = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
         "num_key_value_heads": 1, "max_position_embeddings": 256}
# Per architecture: what its config calls the sizes, or needs beside them.
CHANGES = {
    "gemma2": {"head_dim": 16},
    "gemma3_text": {"head_dim": 16, "sliding_window": 16},
    "gpt_neox": {"num_key_value_heads": None},
    "opt": {"intermediate_size": None, "num_key_value_heads": None, "ffn_dim": 64, "word_embed_proj_dim": 32},
    "lfm2": {"layer_types": ["conv", "full_attention"], "full_attn_idxs": [1], "block_auto_adjust_ff_dim": False},
    "mixtral": {"num_local_experts": 2, "num_experts_per_tok": 1},
    "qwen3_moe": {"num_experts": 2, "num_experts_per_tok": 1, "moe_intermediate_size": 32, "head_dim": 16},
    "granitemoehybrid": {"layer_types": ["mamba", "attention"], "mamba_n_heads": 2, "mamba_d_head": 32,
                         "mamba_d_state": 16, "mamba_chunk_size": 16, "num_local_experts": 2,
                         "num_experts_per_tok": 1, "shared_intermediate_size": 64},
    "falcon_h1": {"mamba_n_heads": 2, "mamba_d_head": 32, "mamba_d_ssm": 64, "mamba_d_state": 8,
                  "mamba_chunk_size": 8},
    "mamba": {"num_attention_heads": None, "num_key_value_heads": None, "max_position_embeddings": None,
              "intermediate_size": None},
}


def stages() -> dict:
    """Every stage after pretrain at the smallest size that trains, samples and scores."""
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text(encoding="utf-8"))["stages"]
    return {
        **{name: smoke[name] for name in ("build", "clean", "validate")},
        "self_instruct": {"target_count": 4, "max_rounds": 1, "batch_size": 4, "max_new_tokens": 8},
        "sft": {"method": "full", "max_steps": 2, "batch_size": 4, "logging_steps": 1, "eval_steps": 2,
                "save_steps": 2, "max_length": 96},
        "preferences": {"tasks": ["add", "reverse"], "num_samples": 2, "max_new_tokens": 4, "eval_prompts": 4,
                        "heldout_fraction": 0.25, "max_prompts": 12, "annotator": "judge"},
        "reward_model": {"max_steps": 1, "batch_size": 4, "logging_steps": 1, "eval_steps": 1},
        "dpo": {"max_steps": 1, "batch_size": 4, "logging_steps": 1, "eval_steps": 1, "win_rate_max_new_tokens": 4},
        "ppo": {"max_steps": 1, "batch_size": 4, "mini_batch_size": 2, "max_new_tokens": 4, "save_steps": 1,
                "sample_every": 1},
        "grpo": {"max_steps": 1, "batch_size": 4, "num_generations": 2, "max_completion_length": 4,
                 "logging_steps": 1},
        "rloo": {"max_steps": 1, "batch_size": 4, "num_generations": 2, "max_completion_length": 4,
                 "logging_steps": 1},
        "evaluate": {**smoke["evaluate"], "add_bos": False, "limit": 2},
    }


def build_model(architecture: str, folder: Path, core) -> bool:
    """Save a random `architecture` model with a ChatML tokenizer; returns whether transformers has a
    sequence-classification class for it."""
    import torch
    import transformers
    from transformers import GenerationConfig, PreTrainedTokenizerFast

    from alignflow.demo.foreign import QWEN_CHAT_TEMPLATE
    from alignflow.models.score_head import has_native_score_head

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        unk_token=None, additional_special_tokens=["<|im_start|>", "<|endoftext|>"])
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    settings = {**SIZES, **CHANGES.get(architecture, {})}
    settings = {key: value for key, value in settings.items() if value is not None}
    config = transformers.AutoConfig.for_model(architecture, vocab_size=len(tokenizer), bos_token_id=None,
                                               eos_token_id=eos, pad_token_id=pad, **settings)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    GenerationConfig(eos_token_id=eos, pad_token_id=pad).save_pretrained(folder)
    return has_native_score_head(config)


def main() -> None:
    from alignflow.demo.foreign import byte_level_bpe, corpus_texts

    lora = "--lora" in sys.argv[1:]
    architectures = [name for name in sys.argv[1:] if name != "--lora"] or ARCHITECTURES
    project = Path(tempfile.mkdtemp(prefix="alignflow-architectures-"))
    for part in ("configs", "data"):
        shutil.copytree(REPO / part, project / part)
    core = byte_level_bpe(corpus_texts(project / "data"), 600, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    print(f"{'architecture':<17} {'rc':>3} {'seconds':>8}  score head    error", flush=True)
    for architecture in architectures:
        folder = project / "models" / architecture
        native = build_model(architecture, folder, core)
        run_stages = json.loads(json.dumps(stages()))
        run_stages["build"]["demo_families"] = {"families": ["add", "reverse"], "per_family": 12}
        run_stages["preferences"]["judge"] = {"model": f"models/{architecture}"}
        if lora:
            run_stages["sft"]["method"] = "lora"
        config = {"name": f"arch-{architecture}", "seed": 0, "base_model": f"models/{architecture}",
                  "stages": run_stages}
        path = project / "configs" / f"arch-{architecture}.yaml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "alignflow.cli", "run", str(path.relative_to(project))],
                              cwd=project, capture_output=True, text=True)
        lines = (done.stdout + done.stderr).strip().splitlines()
        error = next((line for line in reversed(lines) if "Error" in line or line.startswith("error")), "") \
            if done.returncode else ""
        print(f"{architecture:<17} {done.returncode:>3} {time.perf_counter() - started:>8.0f}  "
              f"{'transformers' if native else 'alignflow':<12}  {error[:150]}", flush=True)
    shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
