"""An SFT loss term for the preference stages: the alignment-tax mitigation.

Preference optimisation moves the policy on the preference prompts only; on the instructions SFT
taught it drifts (the demo's `instruct_*` tasks fall). InstructGPT's PPO-ptx adds a language-model
loss on other data to the RL objective; here the term is the SFT loss itself, on the rows SFT
trained on: `loss = preference_loss + sft_loss_coef * sft_loss(replayed SFT batch)`, one replayed
batch per gradient step. PPO adds it in its update (alignflow.rl.ppo_trainer); TRL's DPO, GRPO
and RLOO get it through `with_sft_loss(TrainerClass)`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pandas as pd
import torch

from alignflow.training.sft_data import IGNORE, prompt_template, tokenize_table


def replay_examples(frame: pd.DataFrame, sft_settings, tokenizer) -> list[dict[str, list[int]]]:
    """The rows of `frame` SFT trained on (tasks its mixing weighs 0 are left out: those are the
    preference methods' to teach), tokenised exactly as SFT tokenised them."""
    weights = sft_settings.mixing.task_weights if sft_settings.mixing is not None else {}
    kept = frame[[weights.get(task, 1.0) > 0 for task in frame["task"]]]
    examples, _, _ = tokenize_table(kept, tokenizer, prompt_template(sft_settings, tokenizer), sft_settings.max_length)
    return examples


class SFTReplay:
    """Endless batches of SFT examples in seeded random order, each row once per pass."""

    def __init__(self, examples: Sequence[dict[str, list[int]]], batch_size: int, pad_id: int, seed: int) -> None:
        if not examples:
            raise ValueError("no SFT example to replay")
        self.examples, self.batch_size, self.pad_id = list(examples), batch_size, pad_id
        self.rng = random.Random(seed)
        self.order: list[int] = []

    def next_indices(self) -> list[int]:
        picked = []
        while len(picked) < self.batch_size:
            if not self.order:
                self.order = list(range(len(self.examples)))
                self.rng.shuffle(self.order)
            picked.append(self.order.pop())
        return picked

    def next_batch(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Right-padded input_ids, attention_mask and labels (-100 on the prompt and the padding)."""
        rows = [self.examples[i] for i in self.next_indices()]
        width = max(len(row["input_ids"]) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[i, :n] = torch.tensor(row["input_ids"])
            labels[i, :n] = torch.tensor(row["labels"])
            attention_mask[i, :n] = 1
        return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device),
                "labels": labels.to(device)}


def sft_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the batch's response tokens (the SFT objective)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                             ignore_index=IGNORE)


def stage_replay(stage: str, settings, instructions, pipeline_config, tokenizer) -> SFTReplay | None:
    """The replay a preference stage's `sft_loss_coef` asks for (None when it is 0), from the
    validated instruction rows `instructions` (an InstructionData result) as `stages.sft` tokenised
    them; the table is logged as an input of the stage's run (context sft_loss)."""
    from alignflow.errors import ConfigError, DataError
    from alignflow.models.generation import pad_id
    from alignflow.tracking.runs import read_input

    if not settings.sft_loss_coef:
        return None
    sft_settings = pipeline_config.stages.sft
    if instructions is None or sft_settings is None:
        raise ConfigError(f"stages.{stage}.sft_loss_coef: the SFT loss replays the rows SFT trained on; the "
                          "pipeline needs its sft and validate stages")
    path = instructions.outputs["train"]
    examples = replay_examples(read_input(instructions.outputs, "train", "sft_loss"), sft_settings, tokenizer)
    if not examples:
        raise DataError(f"{stage}: {path} holds no row SFT trained on to replay for sft_loss_coef")
    return SFTReplay(examples, settings.sft_loss_batch_size, pad_id(tokenizer), pipeline_config.seed)


class SFTLossMixin:
    """For a TRL trainer class: adds `sft_loss_coef * sft_loss` on one replayed batch to every
    training loss, and logs the term's mean as `sft_loss`. Set `sft_replay` and `sft_loss_coef`
    after construction; with no replay the trainer is unchanged."""

    sft_replay: SFTReplay | None = None
    sft_loss_coef: float = 0.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        if self.sft_replay is None or not self.sft_loss_coef or not model.training:
            return result
        device = next(model.parameters()).device
        term = sft_loss(model, self.sft_replay.next_batch(device))
        self._metrics["train"]["sft_loss"].append(float(term.detach()))
        if return_outputs:
            loss, outputs = result
            return loss + self.sft_loss_coef * term, outputs
        return result + self.sft_loss_coef * term


def with_sft_loss(trainer_class: type) -> type:
    """`trainer_class` with SFTLossMixin's term (TRL's DPOTrainer, GRPOTrainer, RLOOTrainer)."""
    return type(f"{trainer_class.__name__}WithSFTLoss", (SFTLossMixin, trainer_class), {})
