"""In-context learning against model size: the configured base model's and every pretrain sweep
point's accuracy against k on the recognition and learning tasks, side by side.

The emergence the notes hypothesise (the ability to learn a task from demonstrations appears with
scale), measured on the demo's scale: one curve per base model for each task. Pure functions over
the evaluate stages' result rows; alignflow.tracking.report draws and publishes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ICL_CATEGORIES = ("recognition", "learning")  # what the pretrain sweep points are scored on


@dataclass(frozen=True)
class Curve:
    """One base model's accuracy against k on one task, with its interval at each k."""

    model: str  # the pretrain stage that built it: pretrain, or a sweep point (pretrain-model.hidden_size-64)
    parameters: int | None
    task: str
    category: str
    chance: float | None
    points: tuple[tuple[int, float, float, float], ...]  # (k, accuracy, ci_low, ci_high), by k


def icl_curves(runs: list[tuple[str, int | None, list[dict]]]) -> list[Curve]:
    """Curves from (pretrain stage, its parameter count, the result rows of the evaluate run that
    scored it): the rows of model `pretrain` (the base model an evaluate run read) on the ICL
    categories; by task, then by size."""
    curves = []
    for model, parameters, rows in runs:
        mine = [r for r in rows if r.get("model") == "pretrain" and r.get("category") in ICL_CATEGORIES]
        for task in sorted({r["task"] for r in mine}):
            part = sorted((r for r in mine if r["task"] == task), key=lambda r: int(r["k"]))
            chance = part[0].get("chance")
            curves.append(Curve(model, parameters, task, part[0]["category"],
                                None if chance is None or math.isnan(chance) else float(chance),
                                tuple((int(r["k"]), float(r["accuracy"]), float(r["ci_low"]), float(r["ci_high"]))
                                      for r in part)))
    return sorted(curves, key=lambda c: (c.category != "learning", c.task, c.parameters or 0, c.model))


def curve_label(curve: Curve) -> str:
    size = f"{curve.parameters / 1e6:.2f}M parameters" if curve.parameters else "size unknown"
    return f"{curve.model} ({size})"

