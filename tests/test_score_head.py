"""Reward and value models for architectures transformers has no sequence-classification class for
(alignflow.models.score_head): LFM2 here, whose causal LM mixes short convolutions and attention."""

from __future__ import annotations

import pickle

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, Lfm2ForCausalLM

from alignflow.demo.foreign import build_foreign_model
from alignflow.models.loading import resolve_placement, reward_model_and_tokenizer
from alignflow.models.score_head import has_native_score_head, score_head_class, sequence_classifier_class
from alignflow.rl.rollout import head_outputs

TEXTS = ["输入：这家店很好\n输出：积极", "hello world, a short English line", "1+1=2", "reverse: abc -> cba"] * 20


@pytest.fixture(scope="module")
def lfm2(tmp_path_factory):
    return build_foreign_model("lfm2_hybrid", tmp_path_factory.mktemp("lfm2"), TEXTS)


def test_native_heads_come_from_transformers_and_the_others_from_alignflow(lfm2, tiny_llama):
    assert sequence_classifier_class(AutoConfig.from_pretrained(tiny_llama)) is AutoModelForSequenceClassification
    config = AutoConfig.from_pretrained(lfm2)
    assert not has_native_score_head(config)
    head = sequence_classifier_class(config)
    assert head.__name__ == "Lfm2ForSequenceClassification" and head is score_head_class(type(config))
    assert pickle.loads(pickle.dumps(head)) is head, "importable by name, like a class defined in the module"


def test_the_causal_lm_backbone_loads_into_the_head_and_a_saved_head_loads_back(lfm2, tmp_path):
    model, tokenizer = reward_model_and_tokenizer(str(lfm2), resolve_placement("cpu"), trainable=True)
    causal = Lfm2ForCausalLM.from_pretrained(lfm2)
    backbone = dict(model.base_model.named_parameters())
    assert backbone and all(torch.equal(p, backbone[name]) for name, p in causal.model.named_parameters()), \
        "every backbone weight is the causal LM's"
    assert model.score.out_features == 1 and model.config.pad_token_id == tokenizer.pad_token_id

    with torch.no_grad():
        model.score.weight.normal_()
    model.save_pretrained(tmp_path / "reward")
    tokenizer.save_pretrained(tmp_path / "reward")
    again, _ = reward_model_and_tokenizer(str(tmp_path / "reward"), resolve_placement("cpu"))
    assert torch.equal(again.score.weight, model.score.weight)

    # the score of a left-padded batch is read at each row's last real token, as transformers' heads do
    tokenizer.padding_side = "left"
    batch = tokenizer(["1+1=2", "hello world, a short English line"], return_tensors="pt", padding=True)
    with torch.no_grad():
        scores = again(**batch).logits[:, 0]
        alone = again(**tokenizer(["1+1=2"], return_tensors="pt")).logits[0, 0]
        per_token = head_outputs(again, batch["input_ids"], batch["attention_mask"],
                                 batch["input_ids"][:, :0], batch["attention_mask"][:, :0])
    assert scores[0].item() == pytest.approx(alone.item(), abs=1e-4)
    assert per_token[:, -1].tolist() == pytest.approx(scores.tolist(), abs=1e-4)
    assert AutoTokenizer.from_pretrained(tmp_path / "reward").pad_token == "<|pad|>"


def test_an_architecture_without_a_causal_lm_backbone_is_a_clear_error():
    from transformers import DistilBertConfig

    with pytest.raises(ValueError, match="DistilBertConfig: transformers has no causal-LM backbone"):
        score_head_class(DistilBertConfig)


def test_alignflows_head_scores_a_padded_batch_as_transformers_own_head(tiny_tokenizer):
    from helpers import tiny_llama_config
    from transformers import LlamaForSequenceClassification

    config = tiny_llama_config(tiny_tokenizer, num_labels=1)
    torch.manual_seed(0)
    native = LlamaForSequenceClassification(config).eval()
    ours = score_head_class(type(config))(config).eval()
    ours.load_state_dict(native.state_dict())
    pad = tiny_tokenizer.pad_token_id
    ids = torch.tensor([[pad, pad, 5, 6, 7], [3, 4, 5, 6, 7], [3, 4, 5, pad, pad]])
    with torch.no_grad():
        expected = native(input_ids=ids, attention_mask=(ids != pad).long()).logits
        scores = ours(input_ids=ids, attention_mask=(ids != pad).long()).logits
    assert scores.flatten().tolist() == pytest.approx(expected.flatten().tolist(), abs=1e-6)


# Falcon-H1 initialises buffers at the model level (its µP multipliers), Mamba returns no attentions.
STATE_SPACE = {
    "falcon_h1": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, mamba_n_heads=2, mamba_d_head=32, mamba_d_ssm=64,
                      mamba_d_state=8, mamba_chunk_size=8),
    "mamba": dict(hidden_size=32, num_hidden_layers=2, state_size=8),
}


@pytest.mark.parametrize("kind", sorted(STATE_SPACE))
def test_state_space_backbones_load_whole_into_the_head_and_score_finite(kind, tiny_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    config = AutoConfig.for_model(kind, vocab_size=len(tiny_tokenizer), pad_token_id=tiny_tokenizer.pad_token_id,
                                  eos_token_id=tiny_tokenizer.eos_token_id, bos_token_id=None, **STATE_SPACE[kind])
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    causal = AutoModelForCausalLM.from_pretrained(tmp_path)
    model, tokenizer = reward_model_and_tokenizer(str(tmp_path), resolve_placement("cpu"))
    backbone = dict(model.base_model.named_buffers())
    assert all(torch.equal(b, backbone[name]) for name, b in causal.base_model.named_buffers()), \
        "every buffer, the ones no checkpoint holds included, as the causal LM has it"
    tokenizer.padding_side = "left"
    batch = tokenizer(["1+1=2", "hello world, a short English line"], return_tensors="pt", padding=True)
    with torch.no_grad():
        scores = model(**batch).logits[:, 0]
        alone = model(**tokenizer(["1+1=2"], return_tensors="pt")).logits[0, 0]
    assert torch.isfinite(scores).all()
    assert scores[0].item() == pytest.approx(alone.item(), abs=1e-4)
