"""Tables that cross stage boundaries in the preference flow (pandera).

A preference pair is what reward-model training and DPO consume: one prompt, the response
preferred for it and the one rejected, and by how much. Rankings are the validated input they
are built from: several responses to one prompt with a score each (higher = better; ranks given
as 1 = best are turned into scores, -rank, before this table). Lists are stored as JSON strings so
that the tables stay flat in Parquet and pandas.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series


def same_text(a: str, b: str) -> bool:
    """Two responses that differ only in surrounding whitespace teach no preference."""
    return a.strip() == b.strip()


def responses_problem(text: str) -> str | None:
    """Why `text` is not a JSON list of at least two non-empty strings, or None."""
    try:
        responses = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return "responses is not valid JSON"
    if not isinstance(responses, list) or len(responses) < 2:
        return "responses must be a list of at least two responses"
    if not all(isinstance(r, str) and r.strip() for r in responses):
        return "every response must be non-empty text"
    return None


def scores_problem(text: str) -> str | None:
    """Why `text` is not a JSON list of finite numbers, or None."""
    try:
        scores = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return "scores is not valid JSON"
    if not isinstance(scores, list):
        return "scores must be a list"
    if not all(isinstance(s, int | float) and not isinstance(s, bool) and math.isfinite(s) for s in scores):
        return "every score must be a finite number"
    return None


class PreferencePair(pa.DataFrameModel):
    """One preference: for `prompt`, `chosen` is better than `rejected` by `margin`."""

    id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    prompt: Series[str] = pa.Field(str_length={"min_value": 1})  # the prompt text as the policy saw it
    chosen: Series[str] = pa.Field(str_length={"min_value": 1})
    rejected: Series[str] = pa.Field(str_length={"min_value": 1})
    margin: Series[float] = pa.Field(ge=0)  # score(chosen) - score(rejected), or a rank difference
    source: Series[str] = pa.Field(str_length={"min_value": 1})  # annotator or file the pair came from
    task: Series[str]  # may be ""

    @pa.dataframe_check(error="chosen and rejected must differ (beyond surrounding whitespace)")
    def _chosen_differs(cls, frame: pd.DataFrame) -> Series[bool]:  # noqa: N805
        return pd.Series([not same_text(c, r) for c, r in zip(frame["chosen"], frame["rejected"], strict=True)],
                         index=frame.index, dtype=bool)

    class Config:
        strict = True
        coerce = False


class RankingRow(pa.DataFrameModel):
    """Several responses to one prompt with a score each (higher = better)."""

    prompt_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    prompt: Series[str]  # "" when the file left the text to the stage's own prompt table
    responses: Series[str]  # JSON list of >= 2 non-empty strings
    scores: Series[str]  # JSON list of finite numbers, one per response

    @pa.check("responses", element_wise=True, error="responses must be a JSON list of >= 2 non-empty strings")
    def _valid_responses(cls, text: str) -> bool:  # noqa: N805
        return responses_problem(text) is None

    @pa.check("scores", element_wise=True, error="scores must be a JSON list of finite numbers")
    def _valid_scores(cls, text: str) -> bool:  # noqa: N805
        return scores_problem(text) is None

    @pa.dataframe_check(error="scores must have one entry per response")
    def _same_length(cls, frame: pd.DataFrame) -> Series[bool]:  # noqa: N805
        def matches(responses: str, scores: str) -> bool:
            try:
                return len(json.loads(responses)) == len(json.loads(scores))
            except (TypeError, ValueError):
                return False

        return pd.Series([matches(r, s) for r, s in zip(frame["responses"], frame["scores"], strict=True)],
                         index=frame.index, dtype=bool)

    class Config:
        strict = True
        coerce = False


PREFERENCE_COLUMNS = list(PreferencePair.to_schema().columns)
RANKING_COLUMNS = list(RankingRow.to_schema().columns)
