"""Typed pipeline configuration, declared in YAML and validated here.

Every model is frozen and forbids unknown keys, so a typo is an error naming its key path
rather than a silently ignored setting.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    """Base of every config section: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TrackingConfig(Section):
    uri: str | None = Field(
        None,
        description="MLflow tracking URI. Unset: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db.",
    )
    experiment: str | None = Field(None, description="MLflow experiment name. Unset: the pipeline's name.")


class CacheConfig(Section):
    dir: str = Field(".alignflow/cache", description="Prefect result storage: one file per stage cache key.")
    verify: str = Field(
        "sha256",
        pattern="^(sha256|size)$",
        description="How a cached stage's files are checked before reuse: full content hash, or sizes only "
        "(for multi-GB checkpoints).",
    )


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


class PretrainTrainingConfig(Section):
    steps: int = Field(600, ge=1, description="Optimizer steps.")
    batch_size: int = Field(16, ge=1, description="Sequences per step.")
    seq_len: int = Field(256, ge=8, description="Tokens per sequence (documents are packed).")
    learning_rate: float = Field(3e-3, gt=0, description="Peak learning rate (AdamW).")
    warmup_steps: int = Field(30, ge=0, description="Linear warm-up steps.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate as a fraction of the peak (cosine).")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay on matrices.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clipping threshold.")
    log_every: int = Field(10, ge=1, description="Steps between logged metrics.")
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


class CleanConfig(Section):
    """Cleans instruction rows: normalisation, filters, exact and near deduplication (notes ch. 2)."""

    punctuation_width: Literal["keep", "fullwidth_in_cjk", "halfwidth"] = Field(
        "keep",
        description="After NFKC: keep punctuation as written, use fullwidth marks next to CJK text (and "
        "halfwidth elsewhere), or make all punctuation halfwidth.",
    )
    min_chars: int = Field(5, ge=0, description="Reject an example whose text (all turns) is shorter than this.")
    max_chars: int = Field(20000, ge=1, description="Reject an example whose text (all turns) is longer than this.")
    max_repetition_ratio: float = Field(
        0.5, ge=0, le=1,
        description="Reject a field whose share of repeated token n-grams exceeds this (tokens: CJK characters "
        "and words; fields under 10 tokens are not checked).",
    )
    repetition_ngram: int = Field(3, ge=1, description="n of the token n-grams the repetition filter counts.")
    cjk_ratio: float = Field(
        0.5, gt=0, le=1,
        description="A text counts as CJK when at least this share of its units (CJK characters, other words) "
        "is CJK.",
    )
    cross_lingual_tasks: list[str] = Field(
        ["translate", "translation"],
        description="Tasks exempt from the language-mismatch filter (the response may be in another script).",
    )
    allowed_labels: dict[str, list[str]] = Field(
        {}, description="Per task, the only outputs allowed (e.g. sentiment: [积极, 消极]). Tasks not listed: any."
    )
    copy_allowed_tasks: list[str] = Field(
        [], description="Tasks whose output may equal the input (e.g. text correction); others are rejected."
    )
    blocklist_path: str | None = Field(
        "data/blocklist.txt",
        description="File of blocked words or phrases, one per line, # comments. None: only blocklist_extra.",
    )
    blocklist_extra: list[str] = Field([], description="More blocked words or phrases, added to the file's.")
    near_dup_threshold: float = Field(
        0.8, gt=0, le=1,
        description="Reject a row whose Jaccard similarity (character shingles) to an earlier kept row reaches "
        "this; MinHash-LSH finds the candidates, their exact shingle sets decide.",
    )
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (signature length).")
    shingle_size: int = Field(5, ge=1, description="Characters per shingle for near-duplicate detection.")
    max_rejected_fraction: float = Field(
        0.5, ge=0, le=1, description="Fail the stage if more than this fraction of the rows read is rejected."
    )


class StagesConfig(Section):
    """One section per stage; a stage whose section is absent does not run."""

    pretrain: PretrainConfig | None = Field(
        None, description="Pretrain the demo base model. Exclusive with top-level base_model."
    )
    clean: CleanConfig | None = Field(None, description="Normalise, filter and deduplicate instruction data.")


class PipelineConfig(Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Pipeline name (experiment, registry).")
    seed: int = Field(0, description="Seed for every stage unless a stage overrides it.")
    base_model: str | None = Field(
        None,
        description="Hub id or local folder of the model to post-train. Unset: the pretrain stage builds one.",
    )
    artifacts_dir: str = Field("artifacts", description="Folder for stage outputs (artifacts/<stage>/<cache key>/).")
    tracking: TrackingConfig = TrackingConfig()
    cache: CacheConfig = CacheConfig()
    stages: StagesConfig = StagesConfig()

    @model_validator(mode="after")
    def _one_base_model(self) -> PipelineConfig:
        if self.base_model and self.stages.pretrain:
            raise ValueError("set either base_model or stages.pretrain, not both")
        if not self.base_model and not self.stages.pretrain:
            raise ValueError("set base_model (hub id or folder) or stages.pretrain (build the demo model)")
        return self
