"""Tiny Llama-architecture model built from a config (no hub download)."""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase


def build_llama(tokenizer: PreTrainedTokenizerBase, *, hidden_size: int, intermediate_size: int,
                num_hidden_layers: int, num_attention_heads: int, num_key_value_heads: int,
                max_position_embeddings: int, dropout: float, seed: int) -> LlamaForCausalLM:
    """A freshly initialised Llama whose vocabulary and special ids match `tokenizer`."""
    import torch

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        attention_dropout=dropout,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
