"""How GRPO and RLOO were configured for the demo: a small sweep on the demo's own SFT model, reward
model and prompts, each setting measured as the stage measures it (held-out reward-model score
against the SFT policy, KL to it on the policy's own samples).

The stage path is reused as it is: the same trainer set-up (alignflow.rl.group_rl.group_rl_trainer),
the same reward model loading and the same held-out comparison. Run after `make demo`, which
leaves the SFT model, the reward model and the preference prompts under artifacts/.

Usage: python bench/group_rl_sweep.py [--methods grpo,rloo] [--lr 1e-4,3e-4,1e-3] [--beta 0.05]
       [--generations 4] [--temperature 1.0] [--steps 40] [--artifacts artifacts]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import PrinterCallback
from transformers.utils import logging as transformers_logging

from alignflow.data.tables import read_table
from alignflow.evaluation.comparisons import held_out_comparison
from alignflow.evaluation.sweep import torch_threads
from alignflow.models.loading import (
    load_causal_lm,
    load_tokenizer,
    resolve_placement,
    reward_model_and_tokenizer,
    trainer_precision,
)
from alignflow.rl.group_rl import group_rl_trainer
from alignflow.schemas.stages.group_rl import GroupRLStageConfig
from alignflow.training.reward import reward_function


def newest(folder: Path) -> Path:
    found = sorted(folder.glob("*/"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"nothing under {folder}: run `make demo` first")
    return found[-1]


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="grpo,rloo")
    parser.add_argument("--lr", default="1e-4,3e-4,1e-3")
    parser.add_argument("--beta", default="0.05")
    parser.add_argument("--generations", default="4")
    parser.add_argument("--temperature", default="1.0")
    parser.add_argument("--reward", default="ids", help="ids: alignflow's reward function (token ids, eos kept); "
                        "trl: the reward model handed to TRL (decoded text, eos dropped); or both, comma-separated")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=4)
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--out", default=None, help="JSON lines file for the results")
    args = parser.parse_args()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()

    root = Path(args.artifacts)
    sft, reward, prefs = newest(root / "sft") / "model", newest(root / "reward_model") / "model", newest(root / "preferences")
    prompts = sorted(set(read_table(prefs / "pairs_train.parquet")["prompt"]))
    eval_prompts = read_table(prefs / "eval_prompts.parquet")
    placement = resolve_placement("cpu", "float32")
    reward_model, reward_tokenizer = reward_model_and_tokenizer(str(reward), placement)
    reward_model.requires_grad_(False)
    reference = load_causal_lm(str(sft), placement)
    print(f"sft {sft}\nreward model {reward}\n{len(prompts)} training prompts, {len(eval_prompts)} held out", flush=True)
    grid = itertools.product(args.reward.split(","), args.methods.split(","), floats(args.lr), floats(args.beta),
                             [int(g) for g in args.generations.split(",")], floats(args.temperature))
    for reading, method, lr, beta, generations, temperature in grid:
        settings = GroupRLStageConfig(max_steps=args.steps, batch_size=args.batch, num_generations=generations,
                                      learning_rate=lr, beta=beta, temperature=temperature,
                                      max_completion_length=args.new_tokens, logging_steps=5, save_steps=10_000)
        tokenizer = load_tokenizer(str(sft))
        tokenizer.padding_side = "left"
        torch.manual_seed(0)
        policy = load_causal_lm(str(sft), placement, trainable=True)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder, torch_threads(2):
            rewards, reward_tokenizers = (([reward_function(reward_model, reward_tokenizer)], None) if reading == "ids"
                                          else ([reward_model], [reward_tokenizer]))
            trainer = group_rl_trainer(method, policy, tokenizer, prompts, rewards, settings, folder, seed=0,
                                       precision=trainer_precision(placement), reward_tokenizers=reward_tokenizers)
            trainer.remove_callback(PrinterCallback)
            trainer.train()
            measured = held_out_comparison(trainer.model, reference, reward_model, tokenizer, eval_prompts,
                                           max_new_tokens=args.new_tokens, temperature=temperature,
                                           policy_name="policy")
        row = {"reward": reading, "method": method, "lr": lr, "beta": beta, "generations": generations, "temperature": temperature,
               "steps": args.steps, "seconds": round(time.perf_counter() - started, 1),
               **{k.replace("heldout_", ""): round(v, 3) for k, v in measured.items()}}
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
