"""Evaluate one model on every task and every k: per-sample records and a summary table.

This is what both the `evaluate` stage and `alignflow eval` call; it holds no tracking code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from alignflow.evaluation.embeddings import make_embedder
from alignflow.evaluation.metrics import GENERATION_METRICS, choice_predictions, wilson_interval
from alignflow.evaluation.prompts import continuation_text, fit_demonstrations
from alignflow.evaluation.scoring import Request, encode_pairs, score_requests, tok_encode
from alignflow.evaluation.selection import Ordering, Selection, select_shots
from alignflow.evaluation.spec import EvalDoc, TaskSpec, load_items, load_task
from alignflow.models.generation import generate_greedy
from alignflow.progress import StepProgress


@dataclass(frozen=True)
class SweepSettings:
    """How a model is evaluated (see EvaluateConfig for what each field means)."""

    shots: tuple[int, ...] = (0, 1, 2, 4, 8)
    selection: Selection = "random"
    ordering: Ordering = "as_selected"
    draw: Literal["per_document", "once"] = "per_document"
    seed: int = 1234
    limit: int | None = None
    max_length: int | None = None
    batch_tokens: int = 8192
    prefix_cache: bool = True
    add_bos: bool = False
    embedder: str = "auto"
    heldout_percent: int = 20
    confidence: float = 0.95
    threads: int | None = None


@dataclass
class LoadedTask:
    """A task spec with its test documents and few-shot pool."""

    spec: TaskSpec
    docs: list[EvalDoc]
    pool: list[EvalDoc]
    path: str = ""


def load_tasks(paths: Sequence[str | Path], *, heldout_percent: int = 20, limit: int | None = None) -> list[LoadedTask]:
    tasks = []
    for path in paths:
        spec = load_task(path)
        docs = load_items(spec, spec.test, heldout_percent=heldout_percent, for_test=True)
        pool = load_items(spec, spec.fewshot, heldout_percent=heldout_percent, for_test=False)
        tasks.append(LoadedTask(spec, docs[:limit] if limit else docs, pool, str(path)))
    return tasks


def load_model(name_or_path: str, placement=None, chat_template: str | None = None):
    """(model in eval mode, prepared tokenizer) from a hub id or a local folder, on `placement`
    (default: the automatic one, float32 on a CPU)."""
    from alignflow.models.loading import load_causal_lm, load_tokenizer, resolve_placement

    tokenizer = load_tokenizer(name_or_path, chat_template)
    model = load_causal_lm(name_or_path, placement or resolve_placement())
    return model, tokenizer


def context_window(model, settings: SweepSettings) -> int | None:
    return settings.max_length or getattr(model.config, "max_position_embeddings", None)


@dataclass
class SweepResult:
    records: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    embedder: str | None = None
    seconds: float = 0.0


def _summary_row(task: LoadedTask, k: int, records: list[dict], confidence: float) -> dict:
    n = len(records)
    metric = "acc" if task.spec.output_type == "multiple_choice" else task.spec.metric
    total = sum(r[metric] for r in records)
    low, high = wilson_interval(total, n, confidence)
    row = {"task": task.spec.name, "category": task.spec.category, "k": k, "n": n, "metric": metric,
           "accuracy": total / n if n else 0.0, "ci_low": low, "ci_high": high,
           "dropped_shots": sum(r["dropped_shots"] for r in records) / max(n, 1)}
    if metric == "acc":
        row["acc_norm"] = sum(r["acc_norm"] for r in records) / max(n, 1)
        row["chance"] = sum(1 / len(r["choices"]) for r in records) / max(n, 1)
    return row


@contextmanager
def torch_threads(threads: int | None):
    """Run with `threads` intra-op threads (None: leave torch's setting), restored afterwards.

    Small models on a shared CPU are far faster on one thread: idle-spinning worker threads
    stall whenever another process holds a core (80 s vs 4 s measured for one sweep).
    """
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def evaluate_model(model, tokenizer, tasks: Sequence[LoadedTask], settings: SweepSettings,
                   on_progress: Callable[[str], None] | None = None) -> SweepResult:
    """Every task x every k; records carry prompt, choices, log-likelihoods and prediction."""
    with torch_threads(settings.threads):
        return _evaluate_model(model, tokenizer, tasks, settings, on_progress)


def _evaluate_model(model, tokenizer, tasks: Sequence[LoadedTask], settings: SweepSettings,
                    on_progress: Callable[[str], None] | None) -> SweepResult:
    started = time.perf_counter()
    result = SweepResult()
    window = context_window(model, settings)
    embed = None
    if settings.selection == "similar" or settings.ordering == "similarity":
        result.embedder, embed = make_embedder(settings.embedder)
    passes = [(task, k) for task in tasks for k in (task.spec.shots if task.spec.shots is not None
                                                     else settings.shots)]
    with StepProgress("evaluate", total=sum(len(task.docs) for task, _ in passes), unit="doc") as bar:
        for task, k in passes:
            _evaluate_pass(model, tokenizer, task, k, settings, embed, window, result)
            bar.advance(len(task.docs))
            if on_progress:
                row = result.rows[-1]
                on_progress(f"{task.spec.name} k={k}: {row['metric']} {row['accuracy']:.3f} (n={row['n']})")
    result.seconds = time.perf_counter() - started
    return result


def _evaluate_pass(model, tokenizer, task: LoadedTask, k: int, settings: SweepSettings, embed, window,
                   result: SweepResult) -> None:
    """One task at one k: demonstrations chosen and fitted, documents scored, a summary row added."""
    spec = task.spec

    def count(text: str) -> int:
        return len(tok_encode(tokenizer, text, settings.add_bos))

    shots_per_doc = select_shots(task.pool, task.docs, k, method=settings.selection, ordering=settings.ordering,
                                 seed=settings.seed, draw=settings.draw, same_group=spec.fewshot.same_group,
                                 embed=embed)
    prompts = []
    for doc, shots in zip(task.docs, shots_per_doc, strict=True):
        longest = max((continuation_text(spec, c) for c in doc.choices or ()), key=len, default="")
        reserve = "" if doc.choices else "x" * spec.max_new_tokens  # rough room for generated text
        prompts.append(fit_demonstrations(spec, shots, doc, count_tokens=count, max_tokens=window,
                                          longest_continuation=longest + reserve))
    if spec.output_type == "multiple_choice":
        records = _score_choices(model, tokenizer, task, k, prompts, settings)
    else:
        records = _score_generations(model, tokenizer, task, k, prompts, settings)
    result.records += records
    result.rows.append(_summary_row(task, k, records, settings.confidence))


def _base_record(task: LoadedTask, k: int, doc: EvalDoc, prompt) -> dict:
    return {"task": task.spec.name, "category": task.spec.category, "k": k, "doc_id": doc.id,
            "group": doc.group, "input": doc.input, "target": doc.target, "prompt": prompt.context,
            "shots": len(prompt.shots), "dropped_shots": prompt.dropped}


def _score_choices(model, tokenizer, task: LoadedTask, k: int, prompts, settings: SweepSettings) -> list[dict]:
    spec = task.spec
    requests, spans = [], []
    for doc, prompt in zip(task.docs, prompts, strict=True):
        group = (spec.name, k, tuple(s.id for s in prompt.shots))
        start = len(requests)
        continuations = [continuation_text(spec, choice) for choice in doc.choices]
        for context, continuation in encode_pairs(tokenizer, prompt.context, continuations, settings.add_bos):
            requests.append(Request(context, continuation, group))
        spans.append((start, len(requests)))
    scores = score_requests(model, requests, batch_tokens=settings.batch_tokens,
                            prefix_cache=settings.prefix_cache, max_length=context_window(model, settings))
    records = []
    for doc, prompt, (a, b) in zip(task.docs, prompts, spans, strict=True):
        lls = [scores[i][0] for i in range(a, b)]
        choices = list(doc.choices)
        pred, pred_norm = choice_predictions(lls, choices)
        gold = choices.index(doc.target)
        records.append({**_base_record(task, k, doc, prompt), "choices": choices, "loglikelihoods": lls,
                        "is_greedy": [scores[i][1] for i in range(a, b)], "prediction": choices[pred],
                        "prediction_norm": choices[pred_norm], "acc": float(pred == gold),
                        "acc_norm": float(pred_norm == gold)})
    return records


def _score_generations(model, tokenizer, task: LoadedTask, k: int, prompts, settings: SweepSettings) -> list[dict]:
    spec = task.spec
    contexts = [tok_encode(tokenizer, p.context, settings.add_bos) for p in prompts]
    texts = generate_greedy(model, tokenizer, contexts, until=spec.until, max_new_tokens=spec.max_new_tokens)
    metric = GENERATION_METRICS[spec.metric]
    return [{**_base_record(task, k, doc, prompt), "prediction": text, spec.metric: metric(text, doc.target)}
            for doc, prompt, text in zip(task.docs, prompts, texts, strict=True)]


def format_summary(rows: Sequence[dict], model_column: bool = False) -> str:
    """A plain-text table: (model,) task, k, n, metric, accuracy [CI], acc_norm, chance."""
    head = (f"{'model':<10}" if model_column else "") + f"{'task':<30}{'k':>4}{'n':>6}  {'metric':<12}" \
        f"{'accuracy':>9}  {'95% CI':<14}{'acc_norm':>9}{'chance':>8}"
    lines = [head]
    for row in rows:
        norm = f"{row['acc_norm']:>9.3f}" if "acc_norm" in row else f"{'':>9}"
        chance = f"{row['chance']:>8.2f}" if "chance" in row else f"{'':>8}"
        lines.append((f"{row.get('model', ''):<10}" if model_column else "")
                     + f"{row['task']:<30}{row['k']:>4}{row['n']:>6}  {row['metric']:<12}{row['accuracy']:>9.3f}  "
                     f"[{row['ci_low']:.2f}, {row['ci_high']:.2f}]  {norm}{chance}")
    return "\n".join(lines)
