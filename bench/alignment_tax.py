"""The alignment tax of each preference policy of a pipeline run, and how the SFT loss term
(`sft_loss_coef`, alignflow.training.sft_loss) or weight interpolation towards SFT reduces it.

For every stage folder under `artifacts/` whose name starts with dpo, ppo, grpo or rloo (sweep
points included: run a config with `sweeps: {grpo: {sft_loss_coef: [1.0, 3.0]}}` first), the newest
model is scored as the evaluate stage scores it (zero-shot, held-out reviews, 60 per task) on the
instruction phrasings SFT taught (`instruct_*`, the tax) and the ones preference optimisation
teaches (`prefer_*`), and measured against the SFT policy as the stages measure it (held-out
reward-model score gained, KL, oracle win rate). `--alphas 1,0.5` also scores
`sft + alpha * (policy - sft)`: weight interpolation, the other known mitigation (Lin et al., 2024).

    python bench/alignment_tax.py PROJECT [--stages dpo,ppo] [--alphas 1.0]

Prints one JSON line per policy (and alpha); docs/benchmarks.md has the demo's.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from alignflow.data.tables import read_table
from alignflow.evaluation.comparisons import compare_policies, held_out_comparison
from alignflow.evaluation.sweep import SweepSettings, evaluate_model, load_tasks
from alignflow.models.loading import (
    load_causal_lm,
    load_tokenizer,
    resolve_placement,
    reward_model_and_tokenizer,
)

TASKS = ["instruct_sentiment_zh", "instruct_topic_zh", "prefer_satisfied", "prefer_subject"]
METHODS = ("dpo", "ppo", "grpo", "rloo")


def newest(pattern: str, root: Path) -> str:
    found = list(root.glob(pattern))
    if not found:
        raise SystemExit(f"nothing matches {root / pattern}: run the pipeline first")
    return str(max(found, key=os.path.getmtime))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path, help="folder holding artifacts/ of a pipeline run")
    parser.add_argument("--stages", help="comma-separated stage folders (default: every preference stage)")
    parser.add_argument("--alphas", default="1.0", help="interpolation weights of the policy (1: as trained)")
    args = parser.parse_args()
    artifacts = args.project / "artifacts"
    torch.set_num_threads(1)
    placement = resolve_placement("cpu")
    sft_dir = newest("sft/*/model", artifacts)
    tokenizer = load_tokenizer(sft_dir)
    sft = load_causal_lm(sft_dir, placement).eval()
    reward_model, _ = reward_model_and_tokenizer(newest("reward_model/*/model", artifacts), placement)
    prompts = read_table(newest("preferences/*/eval_prompts.parquet", artifacts))
    tasks = load_tasks([Path(__file__).parents[1] / "data/eval/tasks" / f"{t}.yaml" for t in TASKS], limit=60)
    settings = SweepSettings(shots=(0,), limit=60, add_bos=True, threads=1)
    stages = args.stages.split(",") if args.stages else sorted(
        p.name for p in artifacts.iterdir() if p.name.split("-")[0] in METHODS)
    sft_weights = {k: v.clone() for k, v in sft.state_dict().items()}
    for name in stages:
        policy = load_causal_lm(newest(f"{name}/*/model", artifacts), placement).eval()
        trained = {k: v.clone() for k, v in policy.state_dict().items()}
        for alpha in (float(a) for a in args.alphas.split(",")):
            policy.load_state_dict({k: sft_weights[k] + alpha * (trained[k] - sft_weights[k]) for k in trained})
            accuracy = {row["task"]: round(row["accuracy"], 3) for row in evaluate_model(policy, tokenizer, tasks,
                                                                                         settings).rows}
            held = held_out_comparison(policy, sft, reward_model, tokenizer, prompts, max_new_tokens=4,
                                       policy_name="policy")
            duel, _ = compare_policies(policy, sft, tokenizer, prompts, max_new_tokens=4)
            print(json.dumps({"stage": name, "alpha": alpha, **accuracy,
                              "reward_gain": round(held["heldout_reward_gain"], 2),
                              "gain_ci": [round(held["heldout_reward_gain_ci_low"], 2),
                                          round(held["heldout_reward_gain_ci_high"], 2)],
                              "kl_to_sft": round(held["heldout_kl_to_sft"], 2), "win_rate": round(duel.win_rate, 3)},
                             ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
