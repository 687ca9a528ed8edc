"""Curriculum: phases from easy to hard, adaptive re-ordering by a fresh score between phases."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from alignflow.training.curriculum import CurriculumSampler, easy_to_hard, example_losses, phase_sizes


def test_phase_sizes_cover_the_stream():
    assert phase_sizes(10, 3) == [4, 3, 3]
    assert sum(phase_sizes(101, 4)) == 101


def test_easy_to_hard_sorts_by_score_and_keeps_ties_in_order():
    assert easy_to_hard([10, 11, 12, 13], [0.5, 0.1, 0.5, 0.0]) == [13, 11, 10, 12]


def test_sampler_yields_each_phase_before_the_next():
    difficulty = [5, 1, 9, 3, 7, 2, 8, 0, 6, 4]
    sampler = CurriculumSampler(10, 2, lambda ps: [difficulty[p] for p in ps], seed=0)
    order = list(sampler)
    assert sorted(order) == list(range(10)) and len(sampler) == 10
    first, second = order[:5], order[5:]
    assert max(difficulty[p] for p in first) < min(difficulty[p] for p in second)


def test_adaptive_sampler_rescores_what_is_ahead_at_each_boundary():
    calls = []

    def rescore(positions):
        calls.append(sorted(positions))
        return [-p for p in positions]  # now the high positions look easiest

    sampler = CurriculumSampler(9, 3, lambda ps: list(ps), rescore=rescore, seed=0)
    order = list(sampler)
    assert sorted(order[:3]) == [0, 1, 2]  # first phase from the initial score
    assert calls == [[3, 4, 5, 6, 7, 8], [3, 4, 5]]  # phase 2 boundary: all ahead; phase 3: what is left
    assert sorted(order[3:6]) == [6, 7, 8] and sorted(order[6:]) == [3, 4, 5]


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    return LlamaForCausalLM(config).eval()


def test_example_losses_match_a_manual_per_example_loss(tiny_model):
    examples = [{"input_ids": [1, 5, 7, 9, 2], "labels": [-100, -100, 7, 9, 2]},
                {"input_ids": [1, 4, 3], "labels": [-100, 4, 3]}]
    losses = example_losses(tiny_model, examples, batch_size=2)
    for example, loss in zip(examples, losses, strict=True):
        ids = torch.tensor([example["input_ids"]])
        with torch.no_grad():
            logits = tiny_model(input_ids=ids).logits[0, :-1]
        targets = torch.tensor(example["labels"][1:])
        expected = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100)
        assert loss == pytest.approx(float(expected), rel=1e-4)
    assert not tiny_model.training
