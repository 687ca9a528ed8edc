"""The validate stage's section (tasks/validate.py): the data card and the splits."""

from __future__ import annotations

from pydantic import Field

from alignflow.schemas.trainer import Section


class ValidateConfig(Section):
    """Final check of the instruction data: schema, rejection budget, data card, train/validation split."""

    validation_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of rows (per task, seeded) held out as the SFT validation split."
    )
    min_rows: int = Field(1, ge=1, description="Fail if fewer valid rows than this remain.")
    max_rejected_fraction: float = Field(
        0.5, ge=0, le=1,
        description="Fail if, over the whole data flow, more than this fraction of rows read was rejected.",
    )
