"""The clean stage's section (tasks/clean.py): normalisation, filters, deduplication."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alignflow.schemas.trainer import Section


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
