"""Head-to-head comparison of two policies on held-out prompts with reference answers.

Each policy answers greedily; the oracle scores both answers against the reference. The win rate
counts a tie as half a win, so 0.5 means no difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from alignflow.data.preferences import oracle_score


@dataclass(frozen=True)
class HeadToHead:
    wins: int
    losses: int
    ties: int
    score_a: float  # mean oracle score of policy A
    score_b: float
    exact_a: float  # share of exact answers of policy A
    exact_b: float

    @property
    def win_rate(self) -> float:
        n = self.wins + self.losses + self.ties
        return (self.wins + 0.5 * self.ties) / n if n else 0.5


def head_to_head(answers_a: list[str], answers_b: list[str], references: list[str]) -> HeadToHead:
    a = [oracle_score(x, ref) for x, ref in zip(answers_a, references, strict=True)]
    b = [oracle_score(x, ref) for x, ref in zip(answers_b, references, strict=True)]
    n = max(len(references), 1)
    return HeadToHead(wins=sum(x > y for x, y in zip(a, b, strict=True)),
                      losses=sum(x < y for x, y in zip(a, b, strict=True)),
                      ties=sum(x == y for x, y in zip(a, b, strict=True)),
                      score_a=sum(a) / n, score_b=sum(b) / n,
                      exact_a=sum(x == 1.0 for x in a) / n, exact_b=sum(y == 1.0 for y in b) / n)


def compare_policies(policy, reference_policy, tokenizer, prompts: pd.DataFrame, *, max_new_tokens: int,
                     batch_size: int = 32) -> tuple[HeadToHead, pd.DataFrame]:
    """Greedy answers of both policies to `prompts` (columns prompt, reference), scored by the oracle."""
    from alignflow.sampling import generate_responses

    texts = list(prompts["prompt"])
    answers = [r[0].text for r in generate_responses(policy, tokenizer, texts, max_new_tokens=max_new_tokens,
                                                     batch_size=batch_size, progress="win rate: policy")]
    baseline = [r[0].text for r in generate_responses(reference_policy, tokenizer, texts,
                                                      max_new_tokens=max_new_tokens, batch_size=batch_size,
                                                      progress="win rate: baseline")]
    result = head_to_head(answers, baseline, list(prompts["reference"]))
    table = prompts.assign(answer=answers, baseline_answer=baseline)
    return result, table
