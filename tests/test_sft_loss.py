"""The SFT loss term of the preference stages (the alignment-tax mitigation): replayed batches,
the loss itself, and its effect: with the term, PPO and TRL's DPO end with a lower SFT loss on the
replayed rows than without it, from the same start."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from helpers import tiny_llama_config
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, LlamaForSequenceClassification

from alignflow.errors import ConfigError
from alignflow.rl.ppo_trainer import PPOTrainer
from alignflow.schemas.config import PipelineConfig
from alignflow.schemas.stages.dpo import DPOStageConfig
from alignflow.schemas.stages.ppo import PPOStageConfig
from alignflow.schemas.stages.sft import SFTStageConfig
from alignflow.training.sft_data import IGNORE, PromptTemplate, tokenize_basic
from alignflow.training.sft_loss import SFTReplay, replay_examples, sft_loss, stage_replay, with_sft_loss

ROWS = [("这条评论是好评还是差评？", f"评论{i}：很好", "积极") for i in range(6)] + \
       [("这条评论说的是哪一类东西？", f"评论{i}：手机", "电子") for i in range(6)]


def examples(tokenizer) -> list[dict[str, list[int]]]:
    return [tokenize_basic(instruction, text, output, tokenizer, PromptTemplate()) for instruction, text, output in ROWS]


def test_replay_pads_on_the_right_masks_prompts_and_padding_and_visits_every_row_once_per_pass(tiny_tokenizer):
    rows = examples(tiny_tokenizer)
    replay = SFTReplay(rows, batch_size=4, pad_id=0, seed=3)
    seen = []
    for _ in range(3):  # one pass of 12 rows
        indices = replay.next_indices()
        seen += indices
    assert sorted(seen) == list(range(12))
    batch = SFTReplay(rows, batch_size=5, pad_id=0, seed=3).next_batch()
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    for i in range(5):
        n = int(batch["attention_mask"][i].sum())
        assert batch["attention_mask"][i, :n].all() and not batch["attention_mask"][i, n:].any()
        assert (batch["labels"][i, n:] == IGNORE).all() and (batch["labels"][i, :n] != IGNORE).any()
    again = SFTReplay(rows, batch_size=5, pad_id=0, seed=3).next_batch()
    assert torch.equal(again["input_ids"], batch["input_ids"]), "seeded"


def test_sft_loss_is_the_mean_cross_entropy_of_the_response_tokens(tiny_tokenizer):
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(tiny_tokenizer))
    batch = SFTReplay(examples(tiny_tokenizer), batch_size=6, pad_id=0, seed=0).next_batch()
    expected = model(**batch).loss  # transformers' own shifted, -100-ignoring cross-entropy
    torch.testing.assert_close(sft_loss(model, batch), expected, atol=1e-5, rtol=0)


def test_the_replay_leaves_out_the_tasks_sft_weighed_zero(tiny_tokenizer):
    frame = pd.DataFrame([{"task": task, "source": "demo", "format": "basic", "instruction": ins, "input": text,
                           "output": out, "messages": ""}
                          for task, (ins, text, out) in zip(["sentiment"] * 6 + ["subject"] * 6, ROWS, strict=True)])
    sft = SFTStageConfig(mixing={"task_weights": {"subject": 0}})
    assert len(replay_examples(frame, sft, tiny_tokenizer)) == 6
    assert len(replay_examples(frame, SFTStageConfig(), tiny_tokenizer)) == 12


def test_the_term_is_off_at_zero_and_needs_the_instruction_data_when_on(tiny_tokenizer):
    config = PipelineConfig.model_validate({"name": "t", "base_model": "some/model", "stages": {"sft": {}}})
    assert stage_replay("dpo", DPOStageConfig(), None, config, tiny_tokenizer) is None
    with pytest.raises(ConfigError, match=r"stages\.dpo\.sft_loss_coef"):
        stage_replay("dpo", DPOStageConfig(sft_loss_coef=0.5), None, config, tiny_tokenizer)


def final_sft_loss(model, rows) -> float:
    with torch.no_grad():
        return float(sft_loss(model, SFTReplay(rows, batch_size=len(rows), pad_id=0, seed=0).next_batch()))


def ppo_policy(tokenizer, coef: float) -> tuple[LlamaForCausalLM, list[dict]]:
    torch.manual_seed(0)
    policy = LlamaForCausalLM(tiny_llama_config(tokenizer, num_hidden_layers=2))
    value = LlamaForSequenceClassification(tiny_llama_config(tokenizer, num_hidden_layers=2, num_labels=1))
    settings = PPOStageConfig(max_steps=8, batch_size=16, mini_batch_size=8, ppo_epochs=1, learning_rate=1e-2,
                              kl_coef=0.0, max_new_tokens=4, missing_eos_penalty=None, sft_loss_coef=coef)
    replay = SFTReplay(examples(tokenizer), batch_size=4, pad_id=0, seed=0) if coef else None

    def reward(query_ids, query_mask, response_ids, response_mask, texts):  # favours long responses
        return response_mask.float().sum(1)

    history: list[dict] = []
    trainer = PPOTrainer(policy, copy.deepcopy(policy), value, reward, tokenizer, ["好", "Input: apple\nOutput:"],
                         settings, seed=0, replay=replay)
    trainer.train(on_step=lambda step, metrics: history.append(metrics))
    return policy, history


def test_ppo_with_the_sft_loss_ends_with_a_lower_sft_loss_than_without(tiny_tokenizer):
    rows = examples(tiny_tokenizer)
    plain, plain_history = ppo_policy(tiny_tokenizer, 0.0)
    mixed, mixed_history = ppo_policy(tiny_tokenizer, 1.0)
    assert "sft_loss" not in plain_history[-1] and "sft_loss" in mixed_history[-1]
    assert mixed_history[-1]["sft_loss"] < mixed_history[0]["sft_loss"]
    assert final_sft_loss(mixed, rows) < final_sft_loss(plain, rows) - 0.5, (final_sft_loss(mixed, rows),
                                                                            final_sft_loss(plain, rows))


def dpo_policy(folder, coef: float, tmp_path):
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    pairs = Dataset.from_dict({"prompt": ["指令：写这条评论的人满意吗？\n输入：很好\n输出："] * 16,
                               "chosen": ["满意"] * 16, "rejected": ["手机"] * 16})
    args = DPOConfig(output_dir=str(tmp_path / f"dpo-{coef}"), max_steps=10, per_device_train_batch_size=8,
                     learning_rate=1e-2, logging_steps=2, save_strategy="no", report_to=[], seed=0, use_cpu=True)
    trainer_class = with_sft_loss(DPOTrainer) if coef else DPOTrainer
    trainer = trainer_class(model=model, args=args, train_dataset=pairs, processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)
    if coef:
        trainer.sft_replay = SFTReplay(examples(tokenizer), batch_size=4, pad_id=0, seed=0)
        trainer.sft_loss_coef = coef
    trainer.train()
    return trainer


def test_trl_dpo_with_the_sft_loss_logs_it_and_ends_with_a_lower_sft_loss_than_without(tiny_llama, tmp_path):
    rows = examples(AutoTokenizer.from_pretrained(tiny_llama))
    plain = dpo_policy(tiny_llama, 0.0, tmp_path)
    mixed = dpo_policy(tiny_llama, 1.0, tmp_path)
    logged = [log["sft_loss"] for log in mixed.state.log_history if "sft_loss" in log]
    assert len(logged) == 5 and logged[-1] < logged[0]
    assert not any("sft_loss" in log for log in plain.state.log_history)
    assert final_sft_loss(mixed.model, rows) < final_sft_loss(plain.model, rows) - 0.5
