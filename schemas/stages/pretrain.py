"""The pretrain stage's section (tasks/pretrain.py): the demo corpus, tokenizer, model shape and
training loop, or a base model from the hub or a folder.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from alignflow.schemas.trainer import Section, TrainerSettings, default


class CorpusConfig(Section):
    n_streams: int = Field(20000, ge=1, description="Number of few-shot streams (documents) to generate.")
    max_items: int = Field(9, ge=1, description="Most input/output pairs in one stream.")
    description_prob: float = Field(
        0.5, ge=0, le=1, description="Probability that a stream starts with its task line (任务：…)."
    )
    languages: list[str] = Field(["zh", "en"], min_length=1, description="Stream formats: zh (任务/输入/输出), en.")
    families: list[str] | None = Field(None, description="Task families to include. Unset: all.")
    heldout_percent: int = Field(
        20, ge=0, le=90, description="Percent of inputs held out of the corpus for evaluation."
    )
    relabel_prob: float = Field(
        0.0, ge=0, le=1, description="Share of classification streams (sentiment, topic) whose labels are "
        "remapped within the stream (flipped, or stand-in words): teaches learning a mapping in context.",
    )

    flip_share: float = Field(
        0.5, ge=0, le=1, description="Share of relabelled streams whose labels are a permutation of the family's "
        "own (a flipped sentiment); the rest take stand-in words (random characters or letter strings).",
    )
    repeat_prob: float = Field(
        0.0, ge=0, le=1, description="Share of relabelled streams whose items come from a few inputs drawn with "
        "replacement (repeat_inputs), so a label can be copied from an earlier example of the same input.",
    )
    repeat_inputs: int = Field(3, ge=1, description="Distinct inputs of a repeating (repeat_prob) stream.")
    item_counts: Literal["uniform", "log_uniform"] = Field(
        "uniform", description="Items per stream between 1 and max_items: uniform, or log-uniform (many short "
        "streams and some long many-shot ones).",
    )

    @model_validator(mode="after")
    def _known_languages(self) -> CorpusConfig:
        unknown = sorted(set(self.languages) - {"zh", "en"})
        if unknown:
            raise ValueError(f"unknown languages {unknown}; use zh and/or en")
        return self


class TokenizerConfig(Section):
    vocab_size: int = Field(2048, ge=300, description="BPE vocabulary size, special tokens included.")


class TinyModelConfig(Section):
    hidden_size: int = Field(128, ge=8, description="Width of the residual stream.")
    intermediate_size: int = Field(384, ge=8, description="Width of the MLP.")
    num_hidden_layers: int = Field(4, ge=1, description="Number of transformer blocks.")
    num_attention_heads: int = Field(4, ge=1, description="Query heads.")
    num_key_value_heads: int = Field(2, ge=1, description="Key/value heads (grouped-query attention).")
    max_position_embeddings: int = Field(512, ge=16, description="Longest sequence the model accepts.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Attention dropout.")

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyModelConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
        return self


class PretrainTrainingConfig(TrainerSettings):
    max_steps: int = default(TrainerSettings, "max_steps", 600)
    learning_rate: float = default(TrainerSettings, "learning_rate", 3e-3)
    weight_decay: float = default(TrainerSettings, "weight_decay", 0.1)
    warmup_steps: int = default(TrainerSettings, "warmup_steps", 30)
    logging_steps: int = default(TrainerSettings, "logging_steps", 10)
    seq_len: int = Field(256, ge=8, description="Tokens per sequence (documents are packed).")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate as a fraction of the peak (cosine).")
    validation_fraction: float = Field(
        0.02, ge=0, lt=0.5, description="Fraction of packed blocks kept out of training for validation loss."
    )


class PretrainConfig(Section):
    """Builds the demo base model: synthetic corpus -> BPE tokenizer -> tiny Llama -> pretraining."""

    corpus: CorpusConfig = CorpusConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: TinyModelConfig = TinyModelConfig()
    training: PretrainTrainingConfig = PretrainTrainingConfig()

    @model_validator(mode="after")
    def _sequence_fits(self) -> PretrainConfig:
        if self.training.seq_len > self.model.max_position_embeddings:
            raise ValueError("training.seq_len exceeds model.max_position_embeddings")
        return self


class BaseModelSource(Section):
    """Where the pipeline's base model comes from: a hub id or folder, or the demo pretraining."""

    base_model: str | None = None
    base_model_revision: str | None = None
    pretrain: PretrainConfig | None = None
