"""The demo's learning checks, end to end through `alignflow run` on a small demo-like pipeline.

A tiny base model is pretrained on the two Chinese review families (sentiment and topic of the
same sentences). Then:
- SFT on paraphrased instructions teaches it to follow them: on held-out reviews, asked with the
  paraphrase and with both families' answers as choices (chance 0.5), SFT beats the base model;
- a third phrasing that SFT never trains on (mixing weight 0) is left to the oracle's preferences:
  the reward model ranks held-out pairs correctly (>= 0.75), the DPO policy beats the SFT policy
  on the oracle's win rate on held-out prompts, by more than chance allows, and the PPO policy's
  reward-model score on held-out prompts beats the SFT policy's with its KL to SFT under target.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import make_project, run_here
from mlflow.tracking import MlflowClient

from alignflow.tracking.runs import TAG_STAGE

pytestmark = pytest.mark.slow

SENTIMENT, TOPIC = "这条评论是好评还是差评？", "这条评论说的是哪一类东西？"
CONFIG = {
    "name": "learning",
    "seed": 0,
    "stages": {
        "pretrain": {
            "corpus": {"n_streams": 3000, "max_items": 9, "description_prob": 0.3, "languages": ["zh"],
                       "families": ["sentiment_zh", "topic_zh"], "heldout_percent": 20},
            "tokenizer": {"vocab_size": 600},
            "model": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "num_key_value_heads": 2, "max_position_embeddings": 256},
            "training": {"max_steps": 200, "batch_size": 16, "seq_len": 128, "learning_rate": 0.005, "warmup_steps": 20,
                         "logging_steps": 50},
        },
        "build": {"seeds": [], "datasets": [], "demo_families": {
            "families": ["sentiment_zh", "topic_zh"], "per_family": 100,
            "instructions": {"sentiment_zh": SENTIMENT, "topic_zh": TOPIC},
            "variants": {"satisfied": {"family": "sentiment_zh", "instruction": "写这条评论的人满意吗？"},
                         "subject": {"family": "topic_zh", "instruction": "这条评论提到的是什么？"}}}},
        "clean": {"near_dup_threshold": 0.95},
        "validate": {"validation_fraction": 0.15},
        "sft": {"add_bos": True, "max_length": 64, "max_steps": 80, "batch_size": 16, "learning_rate": 0.001,
                "warmup_steps": 5, "logging_steps": 10, "eval_steps": 40, "save_steps": 40,
                "mixing": {"task_weights": {"satisfied": 0, "subject": 0}}},
        "preferences": {"tasks": ["satisfied", "subject"], "max_prompts": 200, "num_samples": 8,
                        "temperature": 1.5, "max_new_tokens": 4, "pairing": "best_vs_rest", "eval_prompts": 120,
                        "heldout_fraction": 0.2},
        "reward_model": {"max_steps": 300, "batch_size": 16, "learning_rate": 0.001, "logging_steps": 10,
                         "eval_steps": 100},
        "dpo": {"beta": 0.1, "max_steps": 60, "batch_size": 16, "learning_rate": 0.0001, "logging_steps": 10,
                "eval_steps": 30, "win_rate_max_new_tokens": 4},
        "ppo": {"max_steps": 20, "batch_size": 32, "mini_batch_size": 16, "learning_rate": 0.0001, "kl_coef": 0.05,
                "target_kl": 6.0, "max_new_tokens": 4, "save_steps": 10, "sample_every": 10},
        "evaluate": {"tasks": ["data/eval/tasks/instruct_*.yaml", "data/eval/tasks/prefer_*.yaml"], "add_bos": True,
                     "threads": 1, "limit": 60},
    },
}


@pytest.fixture(scope="module")
def learning_run(tmp_path_factory):
    folder = make_project(tmp_path_factory.mktemp("learning"))
    (folder / "configs" / "learning.yaml").write_text(yaml.safe_dump(CONFIG, allow_unicode=True), encoding="utf-8")
    result = run_here(["run", "configs/learning.yaml"], folder)
    print(result.stdout[-6000:])  # the learning curves and tables, whatever they show (pytest -s)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return folder


def stage_metrics(folder: Path, stage: str) -> dict[str, float]:
    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("learning")
    run = client.search_runs([experiment.experiment_id], f"tags.`{TAG_STAGE}` = '{stage}'",
                             order_by=["attributes.start_time DESC"], max_results=1)[0]
    return run.data.metrics


def results(folder: Path) -> pd.DataFrame:
    path = max((folder / "artifacts" / "evaluate").glob("evaluate-*/results.json"), key=lambda p: p.stat().st_mtime)
    return pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))


def test_sft_beats_the_base_model_on_held_out_paraphrased_instructions(learning_run):
    frame = results(learning_run)
    instruction = frame[frame["category"] == "instruction"].groupby("model")["accuracy"].mean()
    documents = frame[(frame["category"] == "instruction") & (frame["model"] == "sft")]["n"].sum()
    # Two-choice questions: the base model is near chance at best; a gap of 0.25 over ~120
    # documents is far beyond chance (binomial sd 0.046).
    assert instruction["sft"] >= 0.9, instruction
    assert instruction["sft"] - instruction["pretrain"] >= 0.25, instruction
    assert documents >= 100
    metrics = stage_metrics(learning_run, "evaluate")
    assert metrics["sft.instruction.k0"] == pytest.approx(instruction["sft"])


def test_reward_model_ranks_held_out_pairs(learning_run):
    metrics = stage_metrics(learning_run, "reward_model")
    assert metrics["heldout_pairs"] >= 20
    assert metrics["heldout_pair_accuracy"] >= 0.75, metrics


def test_dpo_beats_sft_on_the_oracle_win_rate_on_held_out_prompts(learning_run):
    metrics = stage_metrics(learning_run, "dpo")
    wins, losses = metrics["oracle_wins"], metrics["oracle_losses"]
    decided = wins + losses
    # Sign test on the decided prompts: under "no difference" wins ~ Binomial(decided, 1/2).
    p_value = sum(math.comb(int(decided), k) for k in range(int(wins), int(decided) + 1)) / 2 ** decided
    assert metrics["oracle_win_rate_vs_sft"] > 0.5 and p_value < 0.01, metrics
    frame = results(learning_run)
    preference = frame[frame["category"] == "preference"].groupby("model")["accuracy"].mean()
    assert preference["dpo"] > preference["sft"], preference


def test_ppo_raises_the_held_out_reward_within_the_kl_target(learning_run):
    metrics = stage_metrics(learning_run, "ppo")
    assert metrics["heldout_reward_ppo"] > metrics["heldout_reward_sft"] + 0.5, metrics
    assert 0 <= metrics["heldout_kl_to_sft"] < CONFIG["stages"]["ppo"]["target_kl"], metrics
