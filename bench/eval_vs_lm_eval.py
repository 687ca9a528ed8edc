"""alignflow's few-shot scorer vs lm-evaluation-harness: same task, same model, same numbers, wall time.

The task: translate an English word into Chinese, 4 choices (the right translation and three
others), demonstrations drawn from a separate pool, template `输入：{input}\\n输出：` without a task
line: written once as JSONL and scored by both tools. The model: a demo-shaped Llama (4 layers x
128, 512 positions) built deterministically, or any folder given with --model. Both tools get
the same model object in memory, the same torch thread count and the same documents; for each
demonstration sampler (lm-evaluation-harness's `default` = seeded random per document, and
`first_n` = the same demonstrations for every document) and each k, the script checks that
per-sample log-likelihoods agree (max |difference|) and that acc / acc_norm are equal, then
reports wall times side by side. lm-evaluation-harness runs with batch_size 16 (its own batching,
sorted by length, one-token-continuation reuse); its time includes request building, which is
also reported apart from its `loglikelihood` call.

    .venv/bin/pip install lm_eval     # not an alignflow dependency
    .venv/bin/python bench/eval_vs_lm_eval.py [--model DIR] [--shots 0,4,16] [--docs 120] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from alignflow.data.families import build_families
from alignflow.demo.corpus import generate_streams
from alignflow.demo.tokenizer import train_tokenizer
from alignflow.evaluation.sweep import SweepSettings, evaluate_model, load_tasks, torch_threads

LM_EVAL_TASK = """task: bench_translate_{sampler}
dataset_path: json
dataset_kwargs:
  data_files:
    train: {folder}/pool.jsonl
    test: {folder}/test.jsonl
output_type: multiple_choice
training_split: train
fewshot_split: train
test_split: test
doc_to_text: "输入：{{{{input}}}}\\n输出："
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{choices.index(output)}}}}"
target_delimiter: ""
fewshot_delimiter: "\\n\\n"
fewshot_config:
  sampler: {sampler}
metric_list:
  - metric: acc
  - metric: acc_norm
"""

ALIGNFLOW_TASK = """name: bench_translate
language: zh
test: {{path: {folder}/test.jsonl}}
fewshot: {{path: {folder}/pool.jsonl}}
output_type: multiple_choice
choices: item
"""


def write_task(folder: Path, n_docs: int, seed: int) -> None:
    """test.jsonl (n_docs words, 4 choices each) and pool.jsonl (the other words)."""
    items = list(build_families()["translate"].items)
    rng = random.Random(seed)
    rng.shuffle(items)
    words = [item.output for item in items]
    test, pool = items[:n_docs], items[n_docs:]
    with (folder / "test.jsonl").open("w", encoding="utf-8") as handle:
        for item in test:
            choices = sorted(rng.sample([w for w in words if w != item.output], 3) + [item.output])
            handle.write(json.dumps({"input": item.input, "output": item.output, "choices": choices},
                                    ensure_ascii=False) + "\n")
    with (folder / "pool.jsonl").open("w", encoding="utf-8") as handle:
        for item in pool:
            handle.write(json.dumps({"input": item.input, "output": item.output, "choices": [item.output]},
                                    ensure_ascii=False) + "\n")


def demo_shaped_model(folder: Path, seed: int) -> None:
    """Tokenizer trained on a small demo corpus + a randomly initialised demo-size Llama."""
    from transformers import LlamaConfig, LlamaForCausalLM

    rows = generate_streams(n_streams=2000, max_items=6, description_prob=0.5, languages=["zh", "en"],
                            families=None, heldout_percent=20, seed=seed)
    tokenizer = train_tokenizer((row["text"] for row in rows), 2048)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         initializer_range=0.2, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def run_lm_eval(lm, sampler: str, k: int, include: Path) -> tuple[list[dict], float, float]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    spent = {"loglikelihood": 0.0}
    original = lm.loglikelihood

    def timed(requests, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(requests, *args, **kwargs)
        finally:
            spent["loglikelihood"] += time.perf_counter() - start

    lm.loglikelihood = timed
    manager = TaskManager(include_path=str(include))
    start = time.perf_counter()
    try:
        results = lm_eval.simple_evaluate(model=lm, tasks=[f"bench_translate_{sampler}"], num_fewshot=k,
                                          log_samples=True, fewshot_random_seed=1234, task_manager=manager)
    finally:
        lm.loglikelihood = original
    wall = time.perf_counter() - start
    samples = sorted(results["samples"][f"bench_translate_{sampler}"], key=lambda s: s["doc_id"])
    return samples, wall, spent["loglikelihood"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: a demo-shaped model built here)")
    parser.add_argument("--shots", default="0,4,16")
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--samplers", default="default,first_n")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both tools")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args(argv)
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    shots = [int(k) for k in args.shots.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch_threads(args.threads):
        folder = Path(tmp)
        write_task(folder, args.docs, args.seed)
        model_dir = Path(args.model) if args.model else folder / "model"
        if not args.model:
            demo_shaped_model(model_dir, args.seed)
        (folder / "tasks").mkdir()
        for sampler in args.samplers.split(","):
            (folder / "tasks" / f"{sampler}.yaml").write_text(
                LM_EVAL_TASK.format(sampler=sampler, folder=folder), encoding="utf-8")
        (folder / "bench_translate.yaml").write_text(ALIGNFLOW_TASK.format(folder=folder), encoding="utf-8")
        lm = HFLM(pretrained=str(model_dir), dtype="float32", batch_size=16, device="cpu")
        model, tokenizer = lm.model, lm.tokenizer  # the very same weights for alignflow
        model.eval()
        # warm-up, untimed: first forward passes, lazy imports, lm-eval's task registry
        evaluate_model(model, tokenizer, load_tasks([folder / "bench_translate.yaml"]), SweepSettings(shots=(0,)))
        run_lm_eval(lm, args.samplers.split(",")[0], 0, folder / "tasks")
        for sampler in args.samplers.split(","):
            selection = {"default": "random", "first_n": "first_n"}[sampler]
            for k in shots:
                start = time.perf_counter()
                tasks = load_tasks([folder / "bench_translate.yaml"])
                ours = evaluate_model(model, tokenizer, tasks, SweepSettings(shots=(k,), selection=selection,
                                                                            seed=1234)).records
                ours_wall = time.perf_counter() - start
                theirs, theirs_wall, theirs_ll = run_lm_eval(lm, sampler, k, folder / "tasks")
                diff = max(abs(a - float(r[0][0])) for o, t in zip(ours, theirs, strict=True)
                           for a, r in zip(o["loglikelihoods"], t["resps"], strict=True))
                same_prompts = all(o["prompt"] == t["arguments"][0][0] for o, t in zip(ours, theirs, strict=True))
                same_acc = all((o["acc"], o["acc_norm"]) == (t["acc"], t["acc_norm"])
                               for o, t in zip(ours, theirs, strict=True))
                row = {"sampler": sampler, "k": k, "docs": len(ours), "alignflow_s": ours_wall,
                       "lm_eval_s": theirs_wall, "lm_eval_loglikelihood_s": theirs_ll,
                       "speedup": theirs_wall / ours_wall, "max_abs_ll_diff": diff, "same_prompts": same_prompts,
                       "same_acc": same_acc, "acc": sum(o["acc"] for o in ours) / len(ours)}
                rows.append(row)
                print(f"{sampler:<8} k={k:<3} docs={len(ours)}  alignflow {ours_wall:6.2f}s  lm-eval {theirs_wall:6.2f}s "
                      f"(loglikelihood {theirs_ll:6.2f}s)  x{row['speedup']:.1f}  max|dll|={diff:.2e}  "
                      f"prompts equal={same_prompts}  acc equal={same_acc}", flush=True)
    total_ours = sum(r["alignflow_s"] for r in rows)
    total_theirs = sum(r["lm_eval_s"] for r in rows)
    print(f"total: alignflow {total_ours:.1f}s, lm-eval {total_theirs:.1f}s: x{total_theirs / total_ours:.1f} "
          f"(lm_eval {lm_eval.__version__}, torch threads {args.threads})")
    result = {"rows": rows, "lm_eval_version": lm_eval.__version__, "threads": args.threads, "args": vars(args)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
