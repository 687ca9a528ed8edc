"""Regenerate tests/data/lm_eval_reference/reference.json with lm-evaluation-harness itself.

A tiny Llama is built deterministically (committed tokenizer + config + seed in model.json, no
weights in git) and saved to a temporary folder; lm-evaluation-harness's HF model class loads
it with `pretrained=<folder>` and scores two small multiple-choice tasks (English template with
a space delimiter, Chinese template without one) at k = 0 and k = 3 with its default few-shot
sampler. Per-sample contexts, log-likelihoods, acc and acc_norm are written to the JSON that
tests/test_eval_reference.py compares alignflow against.

lm-evaluation-harness is not a dependency of alignflow; install it into your venv first:

    .venv/bin/pip install lm_eval
    .venv/bin/python bench/lm_eval_reference.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "lm_eval_reference"
SHOTS = (0, 3)
FEWSHOT_SEED = 1234

# lm-evaluation-harness task YAML; {folder} and {name} are filled in per task.
LM_EVAL_TASK = """task: alignflow_ref_{name}
dataset_path: json
dataset_kwargs:
  data_files:
    train: {folder}/{name}_train.jsonl
    test: {folder}/{name}_test.jsonl
output_type: multiple_choice
training_split: train
fewshot_split: train
test_split: test
description: {description}
doc_to_text: {text}
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{choices.index(output)}}}}"
target_delimiter: {target_delimiter}
fewshot_delimiter: "\\n\\n"
metric_list:
  - metric: acc
  - metric: acc_norm
"""

TASKS = {
    "en": {"description": json.dumps("Task: pick the answer\n\n"), "text": json.dumps("Input: {{input}}\nOutput:"),
           "target_delimiter": json.dumps(" ")},
    "zh": {"description": json.dumps("任务：选出答案\n\n"), "text": json.dumps("输入：{{input}}\n输出："),
           "target_delimiter": json.dumps("")},
}


def build_reference_model(folder: Path = REFERENCE) -> tuple[LlamaForCausalLM, object]:
    """The reference model: committed tokenizer, config and seed from model.json (deterministic)."""
    spec = json.loads((folder / "model.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    torch.manual_seed(spec["seed"])
    model = LlamaForCausalLM(LlamaConfig(**spec["config"]))
    return model.eval(), tokenizer


def run_lm_eval(model_dir: Path, name: str, k: int, include: Path) -> list[dict]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=[f"alignflow_ref_{name}"],
        num_fewshot=k, batch_size=8, device="cpu", log_samples=True, fewshot_random_seed=FEWSHOT_SEED,
        task_manager=TaskManager(include_path=str(include)),
    )
    samples = sorted(results["samples"][f"alignflow_ref_{name}"], key=lambda s: s["doc_id"])
    return [{"doc_id": s["doc_id"], "context": s["arguments"][0][0],
             "continuations": [a[1] for a in s["arguments"]],
             "loglikelihoods": [float(r[0][0]) for r in s["resps"]],
             "is_greedy": [bool(r[0][1]) for r in s["resps"]],
             "acc": float(s["acc"]), "acc_norm": float(s["acc_norm"])} for s in samples]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REFERENCE / "reference.json"))
    args = parser.parse_args(argv)
    import lm_eval

    model, tokenizer = build_reference_model()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model_dir = tmp_path / "model"
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        include = tmp_path / "tasks"
        include.mkdir()
        for name, fields in TASKS.items():
            (include / f"{name}.yaml").write_text(
                LM_EVAL_TASK.format(name=name, folder=REFERENCE, **fields), encoding="utf-8")
        reference = {"lm_eval_version": lm_eval.__version__, "fewshot_seed": FEWSHOT_SEED,
                     "parameter_sum": float(sum(p.detach().double().sum() for p in model.parameters())),
                     "tasks": {name: {str(k): run_lm_eval(model_dir, name, k, include) for k in SHOTS}
                               for name in TASKS}}
    Path(args.out).write_text(json.dumps(reference, ensure_ascii=False, indent=1), encoding="utf-8")
    for name, by_k in reference["tasks"].items():
        for k, samples in by_k.items():
            acc = sum(s["acc"] for s in samples) / len(samples)
            print(f"{name} k={k}: acc {acc:.3f} over {len(samples)} documents")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
