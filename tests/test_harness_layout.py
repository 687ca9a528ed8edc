"""`alignflow eval --harness-output` (and the evaluate stage) write lm-evaluation-harness's output
layout: a results document whose numbers are the sweep's, and per-sample files whose responses
give back each document's prediction."""

from __future__ import annotations

import json
import math
from pathlib import Path

from alignflow.cli import main
from alignflow.evaluation.prompts import continuation_text
from alignflow.evaluation.spec import load_task

TASKS = Path(__file__).resolve().parents[1] / "data" / "eval" / "tasks"


def test_eval_writes_the_harness_layout_with_the_sweeps_numbers(tiny_llama, tmp_path):
    layout = tmp_path / "lm_eval"
    tasks = ["recognize_sentence_zh.yaml", "generate_translate.yaml"]
    args = ["eval", str(tiny_llama), *[a for t in tasks for a in ("--task", str(TASKS / t))], "--shots", "0,1",
            "--limit", "4", "--threads", "1", "--output", str(tmp_path / "report.json"),
            "--harness-output", str(layout)]
    assert main(args) == 0
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    [results_file] = layout.glob("results_*.json")
    results = json.loads(results_file.read_text(encoding="utf-8"))
    assert set(results["results"]) == {"recognize_sentence_zh_0shot", "recognize_sentence_zh_1shot",
                                       "generate_translate_0shot", "generate_translate_1shot"}
    for row in report["summary"]:
        name = f"{row['task']}_{row['k']}shot"
        metric = row["metric"]
        entry = results["results"][name]
        assert entry[f"{metric},none"] == row["accuracy"] and entry["alias"] == name
        p, n = row["accuracy"], row["n"]
        assert math.isclose(entry[f"{metric}_stderr,none"], math.sqrt(p * (1 - p) * n / (n - 1) / n), abs_tol=1e-12)
        assert results["n-shot"][name] == row["k"] == results["configs"][name]["num_fewshot"]
        assert results["n-samples"][name] == {"original": 4, "effective": 4}
        assert results["higher_is_better"][name] == {m["metric"]: True for m in results["configs"][name]["metric_list"]}
    assert results["config"]["model_args"] == f"pretrained={tiny_llama}" and results["config"]["limit"] == 4

    spec = load_task(TASKS / "recognize_sentence_zh.yaml")
    lines = [json.loads(line) for line in
             next(layout.glob("samples_recognize_sentence_zh_1shot_*.jsonl")).read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 4
    for line in lines:
        scores = [float(response[0]) for response in line["filtered_resps"]]
        best = line["arguments"][f"gen_args_{scores.index(max(scores))}"]["arg_1"]
        assert line["acc"] == float(best == continuation_text(spec, line["target"]))
        assert line["metrics"] == ["acc", "acc_norm"] and line["filter"] == "none"
        assert all(len(line[h]) == 64 for h in ("doc_hash", "prompt_hash", "target_hash"))
        assert line["arguments"]["gen_args_0"]["arg_0"].endswith("输出：")
    generated = [json.loads(line) for line in
                 next(layout.glob("samples_generate_translate_0shot_*.jsonl")).read_text(encoding="utf-8").splitlines()]
    assert all(line["resps"] == [line["filtered_resps"]] and "exact_match" in line for line in generated)
    assert generated[0]["arguments"]["gen_args_0"]["arg_1"]["until"] == ["\n"]
