"""The SFT knobs do what they are for, measured against their ablation on a tiny Llama:
temperature mixing gives a small task more of the stream and so a lower held-out loss on it, and a
validation plateau cuts the learning rate, visibly in the logged rate."""

from __future__ import annotations

import pytest
from datasets import Dataset
from transformers import AutoModelForCausalLM, PrinterCallback

from alignflow.data.families import build_families, split_items
from alignflow.evaluation.sweep import torch_threads
from alignflow.schemas.stages.sft import MixingConfig, PlateauConfig, SFTStageConfig
from alignflow.tasks.sft import trainer_arguments, training_stream
from alignflow.training.curriculum import example_losses
from alignflow.training.sft_data import PromptTemplate, tokenize_basic
from alignflow.training.sft_trainer import AlignflowSFTTrainer
from alignflow.training.stability import ReduceLROnPlateau

pytestmark = pytest.mark.slow


def family_examples(tokenizer, name: str, count: int, heldout: bool = False) -> list[dict]:
    family = build_families()[name]
    train, held_out = split_items(family, 20)
    items = (held_out if heldout else train)[:count]
    return [tokenize_basic(family.description["zh"], item.input, item.output, tokenizer, PromptTemplate())
            for item in items]


def train(tiny_llama, tokenizer, examples, settings: SFTStageConfig, folder, validation=None, callbacks=()):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    trainer = AlignflowSFTTrainer(model=model, args=trainer_arguments(settings, folder, 0, validation is not None),
                                  train_dataset=Dataset.from_list(examples),
                                  eval_dataset=Dataset.from_list(validation) if validation else None,
                                  processing_class=tokenizer, callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)
    with torch_threads(1):
        trainer.train()
    return trainer


def test_temperature_mixing_lowers_the_held_out_loss_of_a_small_task(tiny_llama, tiny_tokenizer, tmp_path):
    """8 `reverse` rows beside 80 `uppercase` rows: examples-proportional mixing gives reverse about a
    tenth of the stream, temperature 100 about half; reverse's held-out loss falls with it."""
    small, large = family_examples(tiny_tokenizer, "reverse", 8), family_examples(tiny_tokenizer, "uppercase", 80)
    examples, origins = small + large, [{"task": "reverse", "source": "demo"}] * 8 + [
        {"task": "uppercase", "source": "demo"}] * 80
    heldout = family_examples(tiny_tokenizer, "reverse", 16, heldout=True)
    losses, shares = {}, {}
    for name, mixing in {"proportional": None, "temperature": MixingConfig(temperature=100.0)}.items():
        settings = SFTStageConfig(max_steps=40, batch_size=8, learning_rate=3e-3, warmup_steps=0, logging_steps=10,
                                  save_steps=1000, mixing=mixing)
        stream, _ = training_stream(origins, settings, 0)
        shares[name] = sum(origins[i]["task"] == "reverse" for i in stream) / len(stream)
        trainer = train(tiny_llama, tiny_tokenizer, [examples[i] for i in stream], settings, tmp_path / name)
        losses[name] = sum(example_losses(trainer.model, heldout)) / len(heldout)
    assert shares["proportional"] < 0.15 and shares["temperature"] > 0.4, shares
    assert losses["temperature"] < losses["proportional"] - 0.1, losses


def test_a_validation_plateau_cuts_the_learning_rate_in_the_logged_curve(tiny_llama, tiny_tokenizer, tmp_path):
    """Trained on `uppercase`, validated on `reverse`: the validation loss stops improving, and the
    logged rate drops by the factor at each cut; without the plateau it stays constant."""
    examples = family_examples(tiny_tokenizer, "uppercase", 80)
    validation = family_examples(tiny_tokenizer, "reverse", 16, heldout=True)
    rates = {}
    for name, plateau in {"plateau": PlateauConfig(factor=0.5, patience=1), "ablation": None}.items():
        settings = SFTStageConfig(max_steps=24, batch_size=8, learning_rate=1e-2, warmup_steps=0,
                                  lr_scheduler="constant_with_warmup", logging_steps=1, eval_steps=2,
                                  save_steps=1000, plateau=plateau)
        callbacks = [ReduceLROnPlateau(plateau.factor, plateau.patience)] if plateau else []
        trainer = train(tiny_llama, tiny_tokenizer, examples, settings, tmp_path / name, validation, callbacks)
        rates[name] = [log["learning_rate"] for log in trainer.state.log_history if "learning_rate" in log]
        if plateau:
            reductions = callbacks[0].reductions
    assert rates["ablation"] == [pytest.approx(1e-2)] * len(rates["ablation"])
    assert reductions > 0
    assert rates["plateau"][0] == pytest.approx(1e-2)
    assert all(later <= earlier for earlier, later in zip(rates["plateau"], rates["plateau"][1:], strict=False))
    levels = sorted(set(rates["plateau"]), reverse=True)  # each cut halves the rate (the last may follow the last log)
    assert levels == [pytest.approx(1e-2 * 0.5 ** k) for k in range(len(levels))]
    assert len(levels) - 1 in (reductions, reductions - 1) and len(levels) > 1, (reductions, rates["plateau"])
