"""Random-weight models that alignflow did not shape for itself, built offline, to try the real path
(`base_model:`) the way a user's own model takes it.

Each mirrors a family users bring, with the tokenizer quirks that break pipelines written for one
model:
- `qwen2_chatml`: Qwen2ForCausalLM; byte-level BPE; eos `<|endoftext|>` while the ChatML template
  ends turns with `<|im_end|>`; no BOS; the generation config lists both stop ids.
- `gpt2_plain`: GPT2LMHeadModel; no chat template and no pad token, as base models ship.
- `llama_wordpiece`: LlamaForCausalLM with a BERT-style WordPiece tokenizer: no eos token (its
  `[SEP]` ends documents), and it returns `token_type_ids`.
- `lfm2_hybrid`: Lfm2ForCausalLM (Liquid's LFM2): short-convolution layers beside attention, a
  hybrid cache, and no sequence-classification class in transformers (reward and value models
  need alignflow's own score head); the tokenizer adds `<|startoftext|>` as BOS and the ChatML
  template writes it again, and turns end with `<|im_end|>`, its eos.

Tiny by default (tests); `bench/gpu_check.py` builds a Qwen2-shaped one of about 0.5B parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast

KINDS = ("qwen2_chatml", "gpt2_plain", "llama_wordpiece", "lfm2_hybrid")

# Qwen2's own template (abridged: no tools), without {% generation %} marks, as Qwen ships it.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# LFM2's template (abridged: no tools): ChatML after the BOS its tokenizer also adds.
LFM2_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_level_bpe(texts: Iterable[str], vocab_size: int, special_tokens: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def wordpiece(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """BERT's recipe: lowercase, every CJK character a word, [CLS] text [SEP] around each text."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(texts, trainer=trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tokenizer


def build_foreign_model(kind: str, folder: Path, texts: list[str], *, vocab_size: int = 600, hidden_size: int = 32,
                        intermediate_size: int = 64, num_layers: int = 1, num_heads: int = 2, num_kv_heads: int = 1,
                        max_positions: int = 256, seed: int = 0) -> Path:
    """Save a random-weight model of `kind` with its tokenizer (trained on `texts`) into `folder`."""
    import torch

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "qwen2_chatml":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        core = byte_level_bpe(texts, vocab_size, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>",
                                            pad_token="<|endoftext|>", unk_token=None,
                                            additional_special_tokens=["<|im_start|>", "<|im_end|>"])
        tokenizer.chat_template = QWEN_CHAT_TEMPLATE
        eos, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
        config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
                             num_hidden_layers=num_layers, num_attention_heads=num_heads,
                             num_key_value_heads=num_kv_heads, max_position_embeddings=max_positions,
                             tie_word_embeddings=True, bos_token_id=None, eos_token_id=eos, pad_token_id=eos)
        model = Qwen2ForCausalLM(config)
        generation = GenerationConfig(bos_token_id=None, eos_token_id=[im_end, eos], pad_token_id=eos)
    elif kind == "gpt2_plain":
        from transformers import GPT2Config, GPT2LMHeadModel

        core = byte_level_bpe(texts, vocab_size, ["<|endoftext|>"])
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|endoftext|>",
                                            eos_token="<|endoftext|>", unk_token="<|endoftext|>")
        eos = tokenizer.eos_token_id
        config = GPT2Config(vocab_size=len(tokenizer), n_positions=max_positions, n_embd=hidden_size,
                            n_layer=num_layers, n_head=num_heads, n_inner=intermediate_size,
                            bos_token_id=eos, eos_token_id=eos)
        model = GPT2LMHeadModel(config)
        generation = GenerationConfig(bos_token_id=eos, eos_token_id=eos)
    elif kind == "llama_wordpiece":
        from transformers import LlamaConfig, LlamaForCausalLM

        tokenizer = PreTrainedTokenizerFast(tokenizer_object=wordpiece(texts, vocab_size), unk_token="[UNK]",
                                            sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                                            mask_token="[MASK]",
                                            model_input_names=["input_ids", "token_type_ids", "attention_mask"])
        cls, sep, pad = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", "[PAD]"])
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
                             num_hidden_layers=num_layers, num_attention_heads=num_heads,
                             num_key_value_heads=num_kv_heads, max_position_embeddings=max_positions,
                             tie_word_embeddings=True, bos_token_id=cls, eos_token_id=sep, pad_token_id=pad)
        model = LlamaForCausalLM(config)
        generation = GenerationConfig(bos_token_id=cls, eos_token_id=sep, pad_token_id=pad)
    elif kind == "lfm2_hybrid":
        from transformers import Lfm2Config, Lfm2ForCausalLM

        core = byte_level_bpe(texts, vocab_size, ["<|pad|>", "<|startoftext|>", "<|im_start|>", "<|im_end|>"])
        bos = core.token_to_id("<|startoftext|>")
        core.post_processor = processors.TemplateProcessing(
            single="<|startoftext|> $A", pair="<|startoftext|> $A <|startoftext|> $B:1",
            special_tokens=[("<|startoftext|>", bos)])
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|startoftext|>", eos_token="<|im_end|>",
                                            pad_token="<|pad|>", unk_token=None,
                                            additional_special_tokens=["<|im_start|>"])
        tokenizer.chat_template = LFM2_CHAT_TEMPLATE
        eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|pad|>"])
        types = ["conv", "full_attention"] * max(1, num_layers)
        config = Lfm2Config(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
                            block_auto_adjust_ff_dim=False, num_hidden_layers=len(types),
                            num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                            max_position_embeddings=max_positions, layer_types=types,
                            full_attn_idxs=[i for i, t in enumerate(types) if t == "full_attention"],
                            tie_word_embeddings=True, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
        model = Lfm2ForCausalLM(config)
        generation = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    else:
        raise ValueError(f"unknown foreign model kind {kind!r}; known: {KINDS}")
    model.save_pretrained(folder)
    generation.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def corpus_texts(data_dir: Path, n_streams: int = 200) -> list[str]:
    """Text to train the foreign tokenizers on: the demo corpus and the project's data files, so that
    every character the pipeline feeds them is in their vocabulary."""
    from alignflow.demo.corpus import generate_streams

    texts = [row["text"] for row in generate_streams(n_streams=n_streams, max_items=4, description_prob=0.5,
                                                      languages=["zh", "en"], families=None, heldout_percent=20,
                                                      seed=0)]
    for path in sorted(data_dir.rglob("*")):
        if path.suffix in {".jsonl", ".csv", ".yaml", ".txt"}:
            texts += path.read_text(encoding="utf-8").splitlines()
    return texts
