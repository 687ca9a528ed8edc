"""The evaluation's results in lm-evaluation-harness's output layout, so tools that read the harness's
files (its own `--output_path` folders, dashboards, leaderboard scripts) read alignflow's too.

One model's folder holds `results_<date>.json` (`results`, `configs`, `versions`, `n-shot`,
`higher_is_better`, `n-samples`, `config`, ...) and one `samples_<task>_<date>.jsonl` per task,
each line a document with its requests' arguments, responses and metrics. The harness runs one
num_fewshot per invocation; a sweep over k becomes one harness task per (task, k), named
`<task>_<k>shot`. Metric keys carry the harness's filter suffix (`acc,none`); stderr is the sample
standard deviation over sqrt(n), as the harness computes it for a mean.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path

from alignflow.evaluation.prompts import continuation_text
from alignflow.evaluation.spec import TaskSpec

FILTER = "none"


def harness_task(task: str, k: int) -> str:
    return f"{task}_{k}shot"


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _metrics(spec: TaskSpec) -> list[str]:
    return ["acc", "acc_norm"] if spec.output_type == "multiple_choice" else [spec.metric]


def _stderr(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) / math.sqrt(n)


def _task_config(spec: TaskSpec, k: int, task_file: str) -> dict:
    config = {"task": harness_task(spec.name, k), "tag": [spec.category], "output_type": spec.output_type,
              "num_fewshot": k, "description": spec.description or "", "target_delimiter": spec.target_delim,
              "fewshot_delimiter": spec.fewshot_delimiter,
              "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in _metrics(spec)],
              "metadata": {"version": 1.0, "alignflow_task": spec.name, "task_file": task_file}}
    if spec.output_type == "generate":
        config["generation_kwargs"] = {"until": spec.until, "max_gen_toks": spec.max_new_tokens, "do_sample": False}
    return config


def sample_line(spec: TaskSpec, record: dict) -> dict:
    """One document of the per-sample file, as the harness writes it."""
    doc = {"input": record["input"], "target": record["target"], "group": record["group"]}
    line = {"doc_id": record["doc_id"], "doc": doc, "target": record["target"]}
    if spec.output_type == "multiple_choice":
        line["arguments"] = {f"gen_args_{i}": {"arg_0": record["prompt"], "arg_1": continuation_text(spec, choice)}
                             for i, choice in enumerate(record["choices"])}
        responses = [[str(ll), str(greedy)] for ll, greedy in zip(record["loglikelihoods"], record["is_greedy"],
                                                                  strict=True)]
        line["resps"] = [[response] for response in responses]
        line["filtered_resps"] = responses
    else:
        line["arguments"] = {"gen_args_0": {"arg_0": record["prompt"],
                                            "arg_1": {"until": spec.until, "max_gen_toks": spec.max_new_tokens}}}
        line["resps"] = [[record["prediction"]]]
        line["filtered_resps"] = [record["prediction"]]
    metrics = _metrics(spec)
    return {**line, "filter": FILTER, "metrics": metrics,
            "doc_hash": _hash(json.dumps(doc, ensure_ascii=False, sort_keys=True)),
            "prompt_hash": _hash(record["prompt"]), "target_hash": _hash(record["target"]),
            **{metric: record[metric] for metric in metrics}}


def harness_results(records: Sequence[dict], specs: dict[str, TaskSpec], task_files: dict[str, str], *,
                    model_name: str, limit: int | None, fewshot_seed: int, date: float) -> dict:
    """The harness's results document for one model's records (every task and k of a sweep)."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for record in records:
        groups.setdefault((record["task"], record["k"]), []).append(record)
    out: dict = {"results": {}, "group_subtasks": {}, "configs": {}, "versions": {}, "n-shot": {},
                 "higher_is_better": {}, "n-samples": {}}
    for (task, k), mine in sorted(groups.items()):
        spec, name = specs[task], harness_task(task, k)
        entry: dict = {"alias": name}
        for metric in _metrics(spec):
            values = [float(r[metric]) for r in mine]
            entry[f"{metric},{FILTER}"] = sum(values) / len(values)
            entry[f"{metric}_stderr,{FILTER}"] = _stderr(values)
        out["results"][name] = entry
        out["group_subtasks"][name] = []
        out["configs"][name] = _task_config(spec, k, task_files.get(task, ""))
        out["versions"][name] = 1.0
        out["n-shot"][name] = k
        out["higher_is_better"][name] = {metric: True for metric in _metrics(spec)}
        out["n-samples"][name] = {"original": len(mine), "effective": len(mine)}
    out["config"] = {"model": "hf", "model_args": f"pretrained={model_name}", "batch_size": None, "limit": limit,
                     "bootstrap_iters": 0, "fewshot_seed": fewshot_seed}
    out |= {"model_name": model_name, "model_name_sanitized": sanitized(model_name), "date": date,
            "producer": "alignflow"}
    return out


def sanitized(model_name: str) -> str:
    """The harness's folder name for a model: path separators and odd characters become __."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", model_name)


def write_harness_layout(folder: Path, records: Sequence[dict], specs: dict[str, TaskSpec],
                         task_files: dict[str, str], *, model_name: str, limit: int | None, fewshot_seed: int,
                         date: float | None = None) -> list[Path]:
    """results_<date>.json and samples_<task>_<date>.jsonl under `folder` (made if missing)."""
    date = time.time() if date is None else date
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(date))
    folder.mkdir(parents=True, exist_ok=True)
    results = harness_results(records, specs, task_files, model_name=model_name, limit=limit,
                              fewshot_seed=fewshot_seed, date=date)
    written = [folder / f"results_{stamp}.json"]
    written[0].write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
    by_task: dict[str, list[dict]] = {}
    for record in records:
        by_task.setdefault(harness_task(record["task"], record["k"]), []).append(
            sample_line(specs[record["task"]], record))
    for name, lines in sorted(by_task.items()):
        path = folder / f"samples_{name}_{stamp}.jsonl"
        path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
        written.append(path)
    return written
