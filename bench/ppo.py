"""Where a PPO step's time goes, and what the KV cache buys during rollouts, side by side in one run.

A demo-size policy (0.9M-parameter Llama, fresh BPE tokenizer trained on demo-family rows), its
frozen copy as reference, and a sequence-classification model as value and reward model. Each
round times, for one batch of prompts: generation (with and without the KV cache, alternating
which goes first), scoring (policy and reference log-probs, values, reward), and the PPO update
(`ppo_epochs` passes of minibatch updates). One thread.

Usage: python bench/ppo.py [--rounds 5] [--batch 32] [--new-tokens 32] [--model DIR]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForSequenceClassification

from alignflow.data.families import build_families
from alignflow.data.instructions import demo_family_rows
from alignflow.demo.model import build_llama
from alignflow.demo.tokenizer import train_tokenizer
from alignflow.rl import ppo_math as pm
from alignflow.rl.ppo_trainer import PPOTrainer
from alignflow.rl.rollout import generate, response_logprobs, response_values, sequence_scores
from alignflow.schemas.stages.ppo import PPOStageConfig
from alignflow.training.sft_data import PromptTemplate


def models(path: str | None, texts: list[str]):
    if path:
        tokenizer = AutoTokenizer.from_pretrained(path)
        policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    else:
        tokenizer = train_tokenizer(texts * 3, 1024)
        policy = build_llama(tokenizer, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, dropout=0.0,
                             seed=0)
    config = copy.deepcopy(policy.config)
    config.num_labels = 1
    value = LlamaForSequenceClassification(config)
    return tokenizer, policy, copy.deepcopy(policy), value


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = demo_family_rows(sorted(build_families()), 20, "zh", 20, 0)
    template = PromptTemplate()
    prompts = [template.render(r["instruction"], r["input"]) for r in rows]
    tokenizer, policy, reference, value = models(args.model, [p + r["output"] for p, r in zip(prompts, rows,
                                                                                               strict=True)])
    reward_model = copy.deepcopy(value).eval()

    def reward(query_ids, query_mask, response_ids, response_mask, texts):
        return sequence_scores(reward_model, query_ids, query_mask, response_ids, response_mask)

    settings = PPOStageConfig(batch_size=args.batch, mini_batch_size=args.batch // 2, max_new_tokens=args.new_tokens,
                              missing_eos_penalty=None)
    trainer = PPOTrainer(policy, reference, value, reward, tokenizer, prompts, settings, seed=0)
    times: dict[str, list[float]] = {"generate (KV cache)": [], "generate (no cache)": [], "score": [],
                                     "update": []}
    tokens: dict[str, list[float]] = {"generate (KV cache)": [], "generate (no cache)": []}
    for round_ in range(args.rounds):
        batch_prompts = trainer.next_prompts()
        order = [True, False] if round_ % 2 == 0 else [False, True]
        for use_cache in order:
            name = "generate (KV cache)" if use_cache else "generate (no cache)"
            torch.manual_seed(round_)
            (query, query_mask, response, mask), seconds = timed(lambda use_cache=use_cache, p=batch_prompts: generate(
                policy, tokenizer, p, range(len(p)), max_new_tokens=args.new_tokens, temperature=1.0, top_p=1.0,
                use_cache=use_cache))
            times[name].append(seconds)
            tokens[name].append(float(mask.sum()))

        def score(query=query, query_mask=query_mask, response=response, mask=mask):
            with torch.no_grad():
                logprobs = response_logprobs(policy, query, query_mask, response, mask)
                ref = response_logprobs(reference, query, query_mask, response, mask)
                values = response_values(value, query, query_mask, response, mask)
                scores = reward(query, query_mask, response, mask, [])
            return pm.RolloutBatch(query, query_mask, response, mask, logprobs, ref, values, scores)

        batch, seconds = timed(score)
        times["score"].append(seconds)
        rewards, _ = pm.per_token_rewards(batch.scores, batch.logprobs, batch.ref_logprobs, mask.float(), 0.05)
        advantages, returns = pm.gae(rewards, batch.values, mask.float(), 1.0, 0.95)
        advantages = pm.masked_whiten(advantages, mask.float())
        _, seconds = timed(lambda batch=batch, advantages=advantages, returns=returns: [
            trainer.update(batch, advantages, returns, indices)
            for _ in range(settings.ppo_epochs) for indices in trainer.minibatches()])
        times["update"].append(seconds)
    step = statistics.median(times["generate (KV cache)"]) + statistics.median(times["score"]) + \
        statistics.median(times["update"])
    print(f"PPO step, batch {args.batch} prompts, up to {args.new_tokens} new tokens, {args.rounds} rounds, "
          "1 thread (medians)")
    for name, values in times.items():
        share = f"{statistics.median(values) / step:6.1%}" if name != "generate (no cache)" else "   -  "
        rate = (f"  {statistics.median(t / s for t, s in zip(tokens[name], values, strict=True)):8.0f} tokens/s"
                if name in tokens else "")
        print(f"{name:22s} {statistics.median(values):7.3f} s  {share} of a step{rate}")
    cached, uncached = (statistics.median(t / s for t, s in zip(tokens[n], times[n], strict=True))
                        for n in ("generate (KV cache)", "generate (no cache)"))
    print(f"KV cache speed-up of rollout generation: {cached / uncached:.2f}x")


if __name__ == "__main__":
    main()
