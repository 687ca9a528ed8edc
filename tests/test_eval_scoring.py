"""Scoring: lm-evaluation-harness's token split, and the prefix-cached path against plain forwards."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignflow.evaluation.scoring import (
    Request,
    common_prefix_length,
    encode_pair,
    encode_pairs,
    prefix_sharing_is_exact,
    score_requests,
    truncate_left,
)
from alignflow.evaluation.sweep import torch_threads
from alignflow.models.generation import generate_greedy


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one torch thread is fastest and does not stall on a busy machine."""
    with torch_threads(1):
        yield

@pytest.fixture(scope="module")
def tiny(tiny_llama):
    """The session's tiny Llama (conftest.py), loaded for this module."""
    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval(), AutoTokenizer.from_pretrained(tiny_llama)


def reference_score(model, context: tuple[int, ...], continuation: tuple[int, ...]) -> tuple[float, bool]:
    """One full forward over context + continuation, no batching, no cache."""
    ids = torch.tensor([list(context + continuation)])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    rows = logprobs[len(context) - 1 : len(context) - 1 + len(continuation)]
    target = torch.tensor(continuation)
    return float(rows.gather(1, target[:, None]).sum()), bool((rows.argmax(-1) == target).all())


def test_encode_pair_moves_trailing_space_and_splits_the_joint_encoding(tiny):
    _, tokenizer = tiny
    context, continuation = encode_pair(tokenizer, "Input: cat\nOutput: ", "tac")
    whole = tokenizer.encode("Input: cat\nOutput: tac")
    assert context == tuple(tokenizer.encode("Input: cat\nOutput:"))
    assert context + continuation == tuple(whole)
    assert tokenizer.decode(list(continuation)) == " tac"
    empty_context, first = encode_pair(tokenizer, "", "tac")
    assert empty_context == (tokenizer.eos_token_id,) and first == tuple(tokenizer.encode("tac"))
    with_bos, _ = encode_pair(tokenizer, "Input:", " x", add_bos=True)
    assert with_bos[0] == tokenizer.bos_token_id
    for add_bos in (False, True):
        for context in ("Input: cat\nOutput: ", "Input: cat\nOutput:", ""):
            together = encode_pairs(tokenizer, context, ["tac", " 苹果", "x"], add_bos)
            assert together == [encode_pair(tokenizer, context, c, add_bos) for c in ["tac", " 苹果", "x"]]


def test_prefix_cache_matches_plain_forwards(tiny):
    model, tokenizer = tiny
    demos = "Input: the movie was great\nOutput: positive\n\nInput: 3, 4\nOutput: 7\n\n"
    requests = []
    for query in ("Input: cat\nOutput:", "Input: apple\nOutput:", "Input: 5, 5\nOutput:"):
        for choice in (" tac", " positive", " 10", " 苹果"):
            context, continuation = encode_pair(tokenizer, demos + query, choice)
            requests.append(Request(context, continuation, group="shared-demos"))
    requests.append(requests[0])  # a duplicate is scored once, reported twice
    solo = encode_pair(tokenizer, "Input: dog\nOutput:", " god")
    requests.append(Request(*solo))  # its own group
    cached = score_requests(model, requests, batch_tokens=64)  # small batches: several chunks
    plain = score_requests(model, requests, prefix_cache=False)
    for request, a, b in zip(requests, cached, plain, strict=True):
        expected = reference_score(model, request.context, request.continuation)
        assert a[0] == pytest.approx(expected[0], abs=1e-4) and b[0] == pytest.approx(expected[0], abs=1e-4)
        assert a[1] == b[1] == expected[1]
    assert cached[0] == cached[-2]


def test_a_group_whose_prefix_is_a_whole_context(tiny):
    model, tokenizer = tiny
    context = tuple(tokenizer.encode("Input: cat\nOutput:"))
    one_token = (tokenizer.encode(" tac")[0],)
    requests = [Request(context, one_token, "g"), Request(context, (5, 6, 7), "g"),
                Request(context + (9,), (5,), "g")]
    for request, (score, _) in zip(requests, score_requests(model, requests), strict=True):
        assert score == pytest.approx(reference_score(model, request.context, request.continuation)[0], abs=1e-4)


def test_common_prefix_and_left_truncation():
    assert common_prefix_length([(1, 2, 3), (1, 2, 4), (1, 2)]) == 2
    assert common_prefix_length([(1,), (2,)]) == 0
    request = Request(tuple(range(10)), (20, 21))
    assert truncate_left(request, 6).context == (5, 6, 7, 8, 9)  # last max_length + 1 tokens in all
    assert truncate_left(request, None) is request
    with pytest.raises(ValueError):
        truncate_left(request, 1)


def test_generate_greedy_stops_at_the_stop_string(tiny):
    model, tokenizer = tiny
    contexts = [tokenizer.encode(c) for c in ["Input: cat\nOutput:", "输入：apple\n输出："]]
    texts = generate_greedy(model, tokenizer, contexts, until=["\n"], max_new_tokens=6)
    assert len(texts) == 2 and all("\n" not in t for t in texts)
    long = generate_greedy(model, tokenizer, contexts[:1], until=[], max_new_tokens=3)
    plain = model.generate(torch.tensor([contexts[0]]), max_new_tokens=3, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id)[0, len(contexts[0]):]
    assert len(plain) <= 3 and long == [tokenizer.decode(plain, skip_special_tokens=True)]


def hybrid_and_windowed_models(vocab_size: int):
    """LFM2 (short convolutions beside attention) and Mistral with a window of 12 or of 4096."""
    from transformers import Lfm2Config, Lfm2ForCausalLM, MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    sizes = {"vocab_size": vocab_size, "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2,
             "num_key_value_heads": 1}
    lfm2 = Lfm2ForCausalLM(Lfm2Config(**sizes, num_hidden_layers=2, layer_types=["conv", "full_attention"],
                                      full_attn_idxs=[1], block_auto_adjust_ff_dim=False))
    return {"lfm2": (lfm2, False),
            "mistral, window 12": (MistralForCausalLM(MistralConfig(**sizes, num_hidden_layers=1, sliding_window=12)),
                                   False),
            "mistral, window 4096": (MistralForCausalLM(MistralConfig(**sizes, num_hidden_layers=1)), True)}


def test_prefixes_are_shared_only_where_the_cache_is_keys_and_values_that_hold_every_request(tiny):
    """A short prefix's padding would reach a convolution's state, and a window shorter than a
    request drops keys its rows need: those models score every request whole, and every model
    gives each request's own score."""
    _, tokenizer = tiny
    demos = "Input: the movie was great\nOutput: positive\n\nInput: 3, 4\nOutput: 7\n\n"
    requests = [Request(*encode_pair(tokenizer, demos + query, choice), group="demos")
                for query in ("Input: cat\nOutput:", "Input: a much longer query\nOutput:")
                for choice in (" tac", " positive and more")]
    longest = max(len(r.context) + len(r.continuation) for r in requests)
    assert 12 < longest < 4096
    for name, (model, shares) in hybrid_and_windowed_models(len(tokenizer)).items():
        model.eval()
        assert prefix_sharing_is_exact(model, longest) is shares, name
        for request, (score, _) in zip(requests, score_requests(model, requests, batch_tokens=64), strict=True):
            assert score == pytest.approx(reference_score(model, request.context, request.continuation)[0],
                                          abs=1e-4), name
