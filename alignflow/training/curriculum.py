"""Curriculum (progressive fine-tuning): train on easy examples first, hard ones last.

Examples are scored (declared task difficulty, length in tokens, or the base model's loss), sorted
easy to hard and cut into phases of equal size; each phase is shuffled. With `rescore`, the
examples not yet trained on are scored again by the current model at every phase boundary and
re-divided, so the order follows what the model finds hard now (adaptive curriculum).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence

from torch.utils.data import Sampler


def split_phases(order: Sequence[int], sizes: Sequence[int]) -> list[list[int]]:
    """Cut `order` into consecutive chunks of the given sizes."""
    phases, start = [], 0
    for size in sizes:
        phases.append(list(order[start:start + size]))
        start += size
    return phases


def phase_sizes(total: int, phases: int) -> list[int]:
    """As equal as possible, earlier phases one larger when it does not divide."""
    base, extra = divmod(total, phases)
    return [base + (1 if i < extra else 0) for i in range(phases)]


def easy_to_hard(positions: Sequence[int], scores: Sequence[float]) -> list[int]:
    """Positions sorted by score (lower = easier); ties keep their order."""
    return [p for _, _, p in sorted(zip(scores, range(len(positions)), positions, strict=True))]


class CurriculumSampler(Sampler[int]):
    """Yields stream positions phase by phase, easy to hard; shuffled within each phase.

    `score(positions)` gives the difficulty of stream positions once, up front. `rescore`, when set
    (it may be set after construction, once the model being trained exists), re-scores the
    positions still ahead at each later phase boundary: the adaptive curriculum.
    """

    def __init__(self, length: int, phases: int, score: Callable[[list[int]], list[float]], *,
                 rescore: Callable[[list[int]], list[float]] | None = None, seed: int = 0,
                 on_phase: Callable[[int, list[int]], None] | None = None) -> None:
        self.length = length
        self.phases = max(1, min(phases, length))
        self.score = score
        self.rescore = rescore
        self.seed = seed
        self.on_phase = on_phase
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        positions = list(range(self.length))
        sizes = phase_sizes(self.length, self.phases)
        phases = split_phases(easy_to_hard(positions, self.score(positions)), sizes)
        for index in range(self.phases):
            if index > 0 and self.rescore is not None:
                ahead = [p for phase in phases[index:] for p in phase]
                phases[index:] = split_phases(easy_to_hard(ahead, self.rescore(ahead)), sizes[index:])
            if self.on_phase:
                self.on_phase(index, phases[index])
            current = list(phases[index])
            rng.shuffle(current)
            yield from current


def example_losses(model, examples: Sequence[dict], batch_size: int = 16) -> list[float]:
    """Mean loss of each example's trained tokens (labels != -100) under `model`, in eval mode."""
    import torch

    was_training = model.training
    model.eval()
    losses: list[float] = []
    try:
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                batch = examples[start:start + batch_size]
                width = max(len(e["input_ids"]) for e in batch)
                ids = torch.zeros((len(batch), width), dtype=torch.long)
                labels = torch.full((len(batch), width), -100, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, example in enumerate(batch):
                    n = len(example["input_ids"])
                    ids[row, :n] = torch.tensor(example["input_ids"])
                    labels[row, :n] = torch.tensor(example["labels"])
                    mask[row, :n] = 1
                device = next(model.parameters()).device
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
                targets = labels[:, 1:].to(device)
                token_loss = torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100,
                    reduction="none").view(targets.shape)
                counted = (targets != -100).sum(dim=1).clamp(min=1)
                losses += (token_loss.sum(dim=1) / counted).tolist()
    finally:
        model.train(was_training)
    return losses
