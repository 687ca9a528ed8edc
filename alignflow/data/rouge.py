"""ROUGE-L (longest common subsequence F-measure) for mixed Chinese and English text: the one
implementation both Self-Instruct filtering and evaluation use.

Self-Instruct keeps a generated instruction only if its ROUGE-L against every instruction
already in the pool stays below a threshold; generation tasks are scored by it. The usual
`rouge_score` tokenizer keeps only [a-z0-9] words and so drops Chinese entirely; here every CJK
character is one token, and other text splits into lowercase words of letters and digits, so
punctuation and case never count ("Hello, world!" = "hello world", "state-of-the-art" = "state
of the art"). On English text this is rouge_score's tokenisation (no stemming); words with
letters outside a-z (café, Cyrillic) are kept whole where rouge_score drops those letters.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"  # ideographs, kana, hangul
_TOKEN = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[^\W_])+")


def rouge_tokens(text: str) -> list[str]:
    """CJK characters one by one, then lowercase words of letters and digits, in text order."""
    return _TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, one row of memory)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def f_measure(lcs: int, candidate_length: int, reference_length: int) -> float:
    """Harmonic mean of LCS precision (lcs/candidate) and recall (lcs/reference).

    2PR/(P+R) simplifies to 2*lcs/(m+n): one division, so a score that is exactly the
    threshold (e.g. 14/20 = 0.7) compares equal to it instead of landing an ulp below.
    """
    if lcs == 0:
        return 0.0
    return 2 * lcs / (candidate_length + reference_length)


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F-measure of two texts (symmetric); 0.0 when either has no tokens."""
    a, b = rouge_tokens(candidate), rouge_tokens(reference)
    return f_measure(lcs_length(a, b), len(a), len(b))


def most_similar(candidate: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, int]:
    """(best ROUGE-L, index of that reference) of tokenised `candidate` against tokenised references.

    The LCS is at most the size of the two token multisets' overlap, so references whose
    bound cannot beat the best score found so far are skipped without the quadratic LCS.
    Returns (0.0, -1) when there is nothing to compare.
    """
    if not candidate:
        return 0.0, -1
    counts = Counter(candidate)
    bounds = []
    for index, reference in enumerate(references):
        overlap = sum((counts & Counter(reference)).values())
        bounds.append((f_measure(overlap, len(candidate), len(reference)) if reference else 0.0, index))
    best, best_index = 0.0, -1
    for bound, index in sorted(bounds, key=lambda item: (-item[0], item[1])):
        if bound <= best:
            break
        score = f_measure(lcs_length(candidate, references[index]), len(candidate), len(references[index]))
        if score > best:
            best, best_index = score, index
    return best, best_index
