import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignflow.demo.corpus import generate_streams
from alignflow.demo.model import build_llama
from alignflow.demo.pretraining import LoopSettings, cosine_lr, evaluate_loss, pack_blocks, train_causal_lm
from alignflow.demo.tokenizer import IM_END, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    rows = generate_streams(n_streams=300, max_items=4, description_prob=0.5, languages=["zh", "en"],
                            families=None, heldout_percent=20, seed=0)
    return train_tokenizer((row["text"] for row in rows), 400)


def test_pack_blocks_keeps_order_and_separators():
    blocks = pack_blocks([[1, 2, 3], [4, 5], [6, 7, 8, 9]], separator_id=0, block_len=3)
    assert blocks.tolist() == [[0, 1, 2, 3], [0, 4, 5, 0], [6, 7, 8, 9]]
    with pytest.raises(ValueError, match="fewer than one block"):
        pack_blocks([[1]], separator_id=0, block_len=8)


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    lr = [cosine_lr(s, total_steps=100, warmup_steps=10, peak=1.0, min_ratio=0.1) for s in range(101)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:], strict=False))
    assert lr[100] == pytest.approx(0.1)
    assert lr[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_tokenizer_has_chat_template_with_generation_markers(tokenizer):
    assert tokenizer.eos_token == IM_END
    messages = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "好的"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n好的<|im_end|>\n"
    rendered = tokenizer.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True)
    mask, ids = rendered["assistant_masks"], rendered["input_ids"]
    assistant = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert assistant == "好的<|im_end|>"


def test_tokenizer_splits_chinese_by_character_and_round_trips(tokenizer):
    text = "任务：情感分析\n输入：这部电影太棒了！\n输出：积极"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    pieces = [tokenizer.decode([i]) for i in ids]
    assert all(len(p) == 1 for p in pieces if any("\u4e00" <= ch <= "\u9fff" for ch in p))


def test_training_lowers_loss_and_model_round_trips(tokenizer, tmp_path):
    rows = generate_streams(n_streams=300, max_items=4, description_prob=0.5, languages=["zh", "en"],
                            families=None, heldout_percent=20, seed=1)
    blocks = pack_blocks([tokenizer(r["text"])["input_ids"] for r in rows], tokenizer.bos_token_id, 32)
    model = build_llama(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=1, max_position_embeddings=64, dropout=0.0, seed=0)
    before = evaluate_loss(model, blocks[:16], 8)
    assert before == pytest.approx(math.log(len(tokenizer)), rel=0.1)
    logged = []
    settings = LoopSettings(max_steps=40, batch_size=8, learning_rate=1e-2, warmup_steps=4, min_lr_ratio=0.1,
                            weight_decay=0.0, max_grad_norm=1.0, logging_steps=10, seed=0)
    train_causal_lm(model, blocks, settings, lambda step, metrics: logged.append(step))
    assert logged == [10, 20, 30, 40]
    after = evaluate_loss(model, blocks[:16], 8)
    assert after < before - 1.0

    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded_tokenizer.chat_template == tokenizer.chat_template
    batch = blocks[:2, :-1]
    torch.testing.assert_close(loaded(input_ids=batch).logits, model(input_ids=batch).logits)


def test_non_finite_loss_stops_training(tokenizer):
    blocks = torch.randint(0, len(tokenizer), (4, 17))
    model = build_llama(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=1, max_position_embeddings=64, dropout=0.0, seed=0)
    with torch.no_grad():
        model.model.embed_tokens.weight.fill_(float("nan"))
    settings = LoopSettings(max_steps=3, batch_size=2, learning_rate=1e-3, warmup_steps=1, min_lr_ratio=0.1,
                            weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, seed=0)
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        train_causal_lm(model, blocks, settings, lambda *_: None)


def test_token_weights_weigh_each_target_token(tokenizer):
    """Weights of one give the plain loss; a zero weight leaves a token out; a weighted token counts more."""
    from alignflow.demo.pretraining import _next_token_loss

    model = build_llama(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=1, max_position_embeddings=64, dropout=0.0, seed=0)
    batch = torch.randint(0, len(tokenizer), (2, 9), generator=torch.Generator().manual_seed(0))
    logits = model(input_ids=batch[:, :-1]).logits
    per_token = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                                  reduction="none")
    plain = _next_token_loss(model, batch)
    torch.testing.assert_close(_next_token_loss(model, batch, torch.ones_like(batch, dtype=torch.float)), plain)
    only_first = torch.zeros(2, 9)
    only_first[0, 1] = 1.0  # the target of the first position
    torch.testing.assert_close(_next_token_loss(model, batch, only_first), per_token[0])
    heavy = torch.ones(2, 9)
    heavy[0, 1] = 5.0
    torch.testing.assert_close(_next_token_loss(model, batch, heavy), (per_token.sum() + 4 * per_token[0]) / 20)
