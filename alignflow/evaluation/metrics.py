"""Per-document metrics and confidence intervals.

Multiple choice follows lm-evaluation-harness: `acc` = argmax of the summed log-likelihoods,
`acc_norm` = argmax of log-likelihood divided by the choice's length in characters; ties go to
the first choice (numpy argmax). Generation: exact match, contains, ROUGE-L F1 (alignflow.data.rouge,
the same as Self-Instruct filtering uses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from alignflow.data.rouge import rouge_l


def choice_predictions(loglikelihoods: list[float], choices: list[str]) -> tuple[int, int]:
    """(index chosen by acc, index chosen by acc_norm)."""
    lls = np.asarray(loglikelihoods, dtype=np.float64)
    lengths = np.asarray([float(len(c)) for c in choices])
    return int(np.argmax(lls)), int(np.argmax(lls / lengths))


def exact_match(prediction: str, target: str) -> float:
    return float(prediction.strip() == target.strip())


def contains(prediction: str, target: str) -> float:
    return float(target.strip() in prediction)


GENERATION_METRICS = {"exact_match": exact_match, "contains": contains, "rouge_l": rouge_l}


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (successes may be fractional, e.g. mean ROUGE x n)."""
    if n == 0:
        return 0.0, 1.0
    z = _normal_quantile(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Normal-approximation interval of a mean (sample standard deviation; a single value: itself)."""
    n = len(values)
    if n == 0:
        raise ValueError("no value to average")
    mean = sum(values) / n
    if n == 1:
        return mean, mean
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)
    half = _normal_quantile(0.5 + confidence / 2) * spread
    return mean - half, mean + half


def _normal_quantile(q: float) -> float:
    """Inverse standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9)."""
    if not 0 < q < 1:
        raise ValueError("quantile must be in (0, 1)")
    a = [-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00]
    b = [-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01]
    c = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00]
    d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00]
    low = 0.02425
    if q < low:
        r = math.sqrt(-2 * math.log(q))
        return (((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) / \
            ((((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1)
    if q > 1 - low:
        return -_normal_quantile(1 - q)
    r = (q - 0.5) ** 2
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * (q - 0.5) / \
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
