"""The preferences stage's section (tasks/preferences.py): sampling, annotation, pairs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from alignflow.schemas.trainer import Section


class JudgeConfig(Section):
    """A causal LM as judge: score = log P(yes) - log P(no) after a rubric prompt."""

    model: str | None = Field(None, description="Hub id or folder of the judge. None: the SFT model itself.")
    revision: str | None = Field(
        None, description="Branch, tag or commit of a hub judge (unset: main). The judge is loaded from that "
        "commit's snapshot, and the commit is logged (param judge.commit)."
    )
    rubric: str = Field(
        "问题：{prompt}\n回答：{response}\n这个回答正确吗？答：",
        description="Rubric prompt with {prompt} and {response}; the judge continues it with the yes or no word.",
    )
    yes: str = Field("是", description="The word for a good response.")
    no: str = Field("否", description="The word for a bad response.")

    @model_validator(mode="after")
    def _revision_of_a_model(self) -> JudgeConfig:
        if self.revision and not self.model:
            raise ValueError("judge.revision is the revision of a hub judge.model; judge.model is not set")
        return self


class PreferenceImportConfig(Section):
    """A public preference dataset read from a file."""

    format: Literal["hh", "ultrafeedback"] = Field(
        ..., description="hh: Anthropic-HH chosen/rejected dialogues; ultrafeedback: scored completions."
    )
    path: str = Field(..., description="JSONL file.")


class PreferencesConfig(Section):
    """Preference pairs: K sampled responses per prompt from the SFT model, annotated, then paired."""

    annotator: Literal["oracle", "rankings_file", "judge", "none"] = Field(
        "oracle", description="oracle: reference-based score (verifiable tasks); rankings_file: human rankings or "
        "scores from a file; judge: a model with a rubric; none: only imported pairs."
    )
    tasks: list[str] | None = Field(
        None, description="Tasks whose validated rows become prompts. None: every task."
    )
    max_prompts: int = Field(200, ge=1, description="Most prompts sampled (the first ones, in a seeded order).")
    num_samples: int = Field(4, ge=2, description="Responses sampled per prompt (K).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(24, ge=1, description="Longest response, in tokens.")
    batch_size: int = Field(32, ge=1, description="Prompts per generate call.")
    pairing: Literal["all_pairs", "best_vs_rest"] = Field(
        "all_pairs", description="Which pairs a ranking gives: every pair with different scores, or the best "
        "against each other response."
    )
    rankings_file: str | None = Field(
        None, description="annotator rankings_file: JSONL or CSV of prompt_id, responses, scores or ranks "
        "(prompt_id = an instruction row id)."
    )
    judge: JudgeConfig = JudgeConfig()
    imports: list[PreferenceImportConfig] = Field([], description="Preference datasets added as they are.")
    heldout_fraction: float = Field(
        0.15, ge=0, lt=1, description="Share of prompts (seeded) whose pairs are held out for evaluation."
    )
    eval_prompts: int = Field(
        60, ge=0, description="Held-out prompts with references (from the validation split of the same tasks) for "
        "the policies' win rates."
    )
    max_rejected_fraction: float = Field(
        0.5, ge=0, le=1, description="Fail if more than this share of file rows is rejected."
    )

    @model_validator(mode="after")
    def _annotator_inputs(self) -> PreferencesConfig:
        if self.annotator == "rankings_file" and not self.rankings_file:
            raise ValueError("annotator rankings_file needs rankings_file: <path>")
        if self.annotator == "none" and not self.imports:
            raise ValueError("annotator none needs at least one entry in imports")
        return self
