"""Demo learning check: a small demo base model recognises tasks from demonstrations.

The model is trained here (alignflow.demo: corpus -> tokenizer -> build_llama -> train_causal_lm)
on the two Chinese review families (sentiment 积极/消极 and topic 电影/餐饮/电子/旅行), whose
inputs are the same sentences: without a task line, only the demonstrations say which one is
asked. The smallest setup found to show it reliably (docs/benchmarks.md): 2 layers x 64 wide,
150 steps of 16 x 128 tokens, streams without task lines. Everything goes through `alignflow eval`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignflow.cli import main
from alignflow.demo.corpus import generate_streams
from alignflow.demo.model import build_llama
from alignflow.demo.pretraining import LoopSettings, pack_blocks, train_causal_lm
from alignflow.demo.tokenizer import train_tokenizer
from alignflow.evaluation.sweep import torch_threads

pytestmark = pytest.mark.slow
TASKS = Path(__file__).resolve().parents[1] / "data" / "eval" / "tasks"
HELDOUT_PERCENT = 20


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory) -> Path:
    rows = list(generate_streams(n_streams=3000, max_items=9, description_prob=0.0, languages=["zh"],
                                 families=["sentiment_zh", "topic_zh"], heldout_percent=HELDOUT_PERCENT, seed=0))
    tokenizer = train_tokenizer((row["text"] for row in rows), 600)
    blocks = pack_blocks([tokenizer(row["text"])["input_ids"] for row in rows], tokenizer.bos_token_id, 128)
    model = build_llama(tokenizer, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, dropout=0.0,
                        seed=0)
    settings = LoopSettings(max_steps=150, batch_size=16, learning_rate=5e-3, warmup_steps=20, min_lr_ratio=0.1,
                            weight_decay=0.1, max_grad_norm=1.0, logging_steps=50, seed=0)
    with torch_threads(1):  # a tiny model: one thread is fastest, and robust on a busy machine
        train_causal_lm(model, blocks, settings, lambda step, metrics: None)
    folder = tmp_path_factory.mktemp("demo-model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_eval(model: Path, out: Path, tasks: list[str], shots: str, *extra: str) -> dict:
    args = ["eval", str(model), *[a for t in tasks for a in ("--task", str(TASKS / t))], "--shots", shots,
            "--add-bos", "--threads", "1", "--heldout-percent", str(HELDOUT_PERCENT), "--output", str(out), *extra]
    assert main(args) == 0
    return json.loads(out.read_text(encoding="utf-8"))


def test_few_shot_beats_zero_shot_on_held_out_task_recognition(demo_model, tmp_path, capsys):
    report = run_eval(demo_model, tmp_path / "results.json",
                      ["recognize_sentence_zh.yaml", "learn_sentiment_zh_new_words.yaml"], "0,1,4", "--limit", "60")
    rows = {(r["task"], r["k"]): r for r in report["summary"]}
    zero, four = rows[("recognize_sentence_zh", 0)], rows[("recognize_sentence_zh", 4)]
    print("\n" + capsys.readouterr().out)  # the learning curve, whatever it shows (pytest -s)
    assert zero["n"] == four["n"] == 60
    # the intervals do not overlap: no chance fluctuation at n = 60 gives this gap
    assert four["ci_low"] > zero["ci_high"], (zero, four)
    assert four["accuracy"] >= zero["accuracy"] + 0.3
    learning = [rows[("learn_sentiment_zh_new_words", k)] for k in (0, 1, 4)]
    assert all(0 <= r["accuracy"] <= 1 and r["n"] == 60 for r in learning)  # reported, not asserted
    sample = next(s for s in report["samples"] if s["task"] == "recognize_sentence_zh" and s["k"] == 4)
    assert sample["prompt"].count("输入：") == 5 and sample["prompt"].endswith("输出：")
    assert len(sample["loglikelihoods"]) == len(sample["choices"]) and sample["prediction"] in sample["choices"]


def test_cli_generation_selection_and_dropped_demonstrations(demo_model, tmp_path):
    report = run_eval(demo_model, tmp_path / "gen.json", ["recognize_sentence_zh.yaml", "generate_translate.yaml"],
                      "0,64", "--limit", "3", "--selection", "balanced", "--max-length", "200")
    generated = [s for s in report["samples"] if s["task"] == "generate_translate"]
    assert all("\n" not in s["prediction"] and s["exact_match"] in (0.0, 1.0) for s in generated)
    many = [s for s in report["samples"] if s["k"] == 64]
    assert all(s["dropped_shots"] > 0 and s["shots"] + s["dropped_shots"] == 64 for s in many)
    assert all(s["prompt"].startswith("<|endoftext|>") is False for s in many)  # BOS is a token, not text
    assert main(["eval", str(demo_model), "--task", str(TASKS / "nope.yaml"), "--output",
                 str(tmp_path / "x.json")]) == 2
