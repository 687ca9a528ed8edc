"""alignflow's scores equal lm-evaluation-harness's, sample by sample.

tests/data/lm_eval_reference/reference.json was written by bench/lm_eval_reference.py running
lm-evaluation-harness (HF model class, `pretrained=<folder>`) on a tiny Llama that this test
rebuilds from the committed tokenizer, config and seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from alignflow.evaluation.sweep import SweepSettings, evaluate_model, load_tasks, torch_threads

REFERENCE = Path(__file__).resolve().parent / "data" / "lm_eval_reference"



@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one torch thread is fastest and does not stall on a busy machine."""
    with torch_threads(1):
        yield

@pytest.fixture(scope="module")
def reference_model():
    spec = json.loads((REFERENCE / "model.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(REFERENCE / "tokenizer")
    torch.manual_seed(spec["seed"])
    model = LlamaForCausalLM(LlamaConfig(**spec["config"])).eval()
    return model, tokenizer


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_per_sample_loglikelihoods_and_accuracies_match_lm_eval(reference_model, prefix_cache):
    model, tokenizer = reference_model
    reference = json.loads((REFERENCE / "reference.json").read_text(encoding="utf-8"))
    rebuilt = float(sum(p.detach().double().sum() for p in model.parameters()))
    assert rebuilt == pytest.approx(reference["parameter_sum"], rel=1e-9), "the rebuilt model differs"
    tasks = load_tasks([REFERENCE / "en.yaml", REFERENCE / "zh.yaml"])
    settings = SweepSettings(shots=(0, 3), selection="random", seed=reference["fewshot_seed"],
                             prefix_cache=prefix_cache)
    records = evaluate_model(model, tokenizer, tasks, settings).records
    compared = 0
    for name in ("en", "zh"):
        for k, samples in reference["tasks"][name].items():
            ours = [r for r in records if r["task"] == f"ref_{name}" and r["k"] == int(k)]
            assert len(ours) == len(samples)
            for mine, theirs in zip(ours, samples, strict=True):
                assert mine["prompt"] == theirs["context"]
                assert [" " * (name == "en") + c for c in mine["choices"]] == theirs["continuations"]
                assert mine["loglikelihoods"] == pytest.approx(theirs["loglikelihoods"], abs=1e-4)
                assert mine["is_greedy"] == theirs["is_greedy"]
                assert (mine["acc"], mine["acc_norm"]) == (theirs["acc"], theirs["acc_norm"])
                compared += 1
    assert compared == 48
