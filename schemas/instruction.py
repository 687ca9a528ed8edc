"""Tables that cross stage boundaries in the instruction-data flow (pandera).

Instruction rows have one canonical shape whatever their source. `messages` holds the chat
form SFT consumes, as a JSON string (a list of {"role", "content"} ending with the assistant),
so that the table stays flat in Parquet and pandas.
"""

from __future__ import annotations

import json

import pandera.pandas as pa
from pandera.typing import Series

FORMATS = ("basic", "dialogue", "multi_turn")
ROLES = ("system", "user", "assistant")


def messages_problem(text: str) -> str | None:
    """Why `text` is not a valid conversation, or None."""
    try:
        messages = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return "messages is not valid JSON"
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    for turn in messages:
        if not isinstance(turn, dict) or set(turn) != {"role", "content"}:
            return "each message needs exactly the keys role and content"
        if turn["role"] not in ROLES or not isinstance(turn["content"], str) or not turn["content"].strip():
            return f"message role must be one of {ROLES} with non-empty text content"
    if messages[-1]["role"] != "assistant":
        return "the last message must be the assistant's"
    if not any(turn["role"] == "user" for turn in messages):
        return "a conversation needs a user message"
    return None


class InstructionRow(pa.DataFrameModel):
    """One instruction example in canonical form."""

    id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    task: Series[str] = pa.Field(str_length={"min_value": 1})
    format: Series[str] = pa.Field(isin=list(FORMATS))
    instruction: Series[str] = pa.Field(str_length={"min_value": 1})
    input: Series[str]
    output: Series[str] = pa.Field(str_length={"min_value": 1})
    messages: Series[str]
    source: Series[str] = pa.Field(str_length={"min_value": 1})

    @pa.check("messages", element_wise=True, error="messages must be a valid conversation ending with the assistant")
    def _valid_conversation(cls, text: str) -> bool:  # noqa: N805
        return messages_problem(text) is None

    class Config:
        strict = True
        coerce = False


class RejectedRow(pa.DataFrameModel):
    """A row some stage refused, with where it came from and why. Nothing is dropped silently."""

    stage: Series[str]
    source: Series[str]  # file or upstream table the row came from
    row: Series[int]  # 1-based line/row number in that source; 0 when not applicable
    id: Series[str]  # the row's id when it had one, else ""
    field: Series[str]  # the offending column, or "" for whole-row rules
    rule: Series[str]  # short machine name (duplicate_id, near_duplicate, too_long, ...)
    reason: Series[str]  # human-readable explanation
    record: Series[str]  # the original row as JSON

    class Config:
        strict = True


INSTRUCTION_COLUMNS = list(InstructionRow.to_schema().columns)
REJECTED_COLUMNS = list(RejectedRow.to_schema().columns)
