"""The evaluate stage's section (tasks/evaluate.py): tasks x k few-shot evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from alignflow.schemas.trainer import Section


class EvaluateConfig(Section):
    """Few-shot sweep over every model the pipeline produced: tasks x k, lm-evaluation-harness scoring."""

    tasks: list[str] = Field(
        ["data/eval/tasks/*.yaml"], min_length=1,
        description="Task YAML files (glob patterns allowed), relative to the project folder.",
    )
    categories: list[Literal["recognition", "learning", "instruction", "preference", "other"]] | None = Field(
        None, min_length=1, description="Score only the tasks of these categories. Unset: every task. The pretrain "
        "sweep points are scored on recognition and learning (the in-context learning curves).",
    )
    heldout_percent: int | None = Field(
        None, ge=0, le=90, description="Percent of the demo task families' inputs that `split: heldout` draws from. "
        "Unset: the pretrain corpus's, so held-out inputs are ones the base model never saw (a pretrain sweep point "
        "is scored with its own).",
    )
    shots: list[int] = Field([0, 1, 2, 4, 8], min_length=1, description="Numbers of demonstrations k to sweep.")
    selection: Literal["random", "first_n", "balanced", "similar"] = Field(
        "random", description="Demonstrations: seeded random per document (lm-evaluation-harness default), the "
        "pool's first k, class-balanced, or nearest neighbours by embedding similarity.",
    )
    ordering: Literal["as_selected", "random", "similarity"] = Field(
        "as_selected", description="Order of the chosen demonstrations (similarity: most similar last).",
    )
    draw: Literal["per_document", "once"] = Field(
        "per_document", description="A new draw for every document, or one draw per task and k shared by all "
        "documents (one shared prefix: fastest).",
    )
    fewshot_seed: int = Field(1234, description="Seed of the demonstration draws (lm-evaluation-harness: 1234).")
    limit: int | None = Field(None, ge=1, description="Score at most this many documents per task.")
    max_length: int | None = Field(
        None, ge=8, description="Context window in tokens. Unset: the model's max_position_embeddings. "
        "Demonstrations that do not fit are dropped whole and counted.",
    )
    add_bos: bool = Field(
        False, description="Prepend the tokenizer's BOS token to every context (the demo model is pretrained "
        "with BOS before each document). lm-evaluation-harness's default is off.",
    )
    batch_tokens: int = Field(8192, ge=64, description="Rows x tokens per forward pass.")
    prefix_cache: bool = Field(
        True, description="Run a prefix shared by several requests (the demonstrations) once and reuse its KV cache.",
    )
    embedder: Literal["auto", "minilm", "tfidf"] = Field(
        "auto", description="Embeddings for similar/similarity: MiniLM (extra alignflow[embeddings]) or TF-IDF.",
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of the Wilson interval around each accuracy.")
    threads: int | None = Field(
        None, ge=1, description="torch intra-op threads while scoring. Unset: torch's default. 1 is fastest for "
        "tiny models on a shared CPU.",
    )

    @model_validator(mode="after")
    def _shots_valid(self) -> EvaluateConfig:
        if any(k < 0 for k in self.shots) or len(set(self.shots)) != len(self.shots):
            raise ValueError("shots must be distinct numbers >= 0")
        return self
