"""A plain causal-LM pretraining loop (nanoGPT style): packing, cosine schedule, AdamW, clipping."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def pack_blocks(token_lists: list[list[int]], separator_id: int, block_len: int) -> torch.Tensor:
    """Concatenate documents (each preceded by `separator_id`) and cut into rows of block_len + 1.

    The extra token makes inputs/targets of length block_len by shifting one row.
    """
    stream: list[int] = []
    for ids in token_lists:
        stream.append(separator_id)
        stream.extend(ids)
    n_rows = len(stream) // (block_len + 1)
    if n_rows == 0:
        raise ValueError(f"corpus has {len(stream)} tokens, fewer than one block of {block_len + 1}")
    return torch.tensor(stream[: n_rows * (block_len + 1)], dtype=torch.long).view(n_rows, block_len + 1)


def cosine_lr(step: int, *, total_steps: int, warmup_steps: int, peak: float, min_ratio: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to `peak * min_ratio` at `total_steps`."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass(frozen=True)
class LoopSettings:
    max_steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    min_lr_ratio: float
    weight_decay: float
    max_grad_norm: float
    logging_steps: int
    seed: int


def train_causal_lm(model: torch.nn.Module, blocks: torch.Tensor, settings: LoopSettings,
                    on_log: Callable[[int, dict[str, float]], None],
                    token_weights: torch.Tensor | None = None) -> dict[str, float]:
    """Train on random rows of `blocks`; call on_log(step, metrics) every logging_steps steps.
    `token_weights` (blocks' shape) weighs each target token's loss (bench/icl_learning_probe.py
    weighs label tokens); unset, every token counts once.

    Returns the final metrics (loss averaged over the last logging window, throughput).
    """
    generator = torch.Generator().manual_seed(settings.seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.learning_rate, betas=(0.9, 0.95),
    )
    model.train()
    device = next(model.parameters()).device
    window_loss, window_tokens, window_start = 0.0, 0, time.perf_counter()
    metrics: dict[str, float] = {}
    for step in range(settings.max_steps):
        lr = cosine_lr(step, total_steps=settings.max_steps, warmup_steps=settings.warmup_steps,
                       peak=settings.learning_rate, min_ratio=settings.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rows = torch.randint(0, blocks.shape[0], (settings.batch_size,), generator=generator)
        batch = blocks[rows].to(device)
        weights = None if token_weights is None else token_weights[rows].to(device)
        loss = _next_token_loss(model, batch, weights)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        window_loss += loss.item()
        window_tokens += batch[:, :-1].numel()
        done = step + 1
        if done % settings.logging_steps == 0 or done == settings.max_steps:
            n = settings.logging_steps if done % settings.logging_steps == 0 else done % settings.logging_steps
            elapsed = time.perf_counter() - window_start
            metrics = {
                "train_loss": window_loss / n,
                "learning_rate": lr,
                "grad_norm": float(grad_norm),
                "tokens_per_second": window_tokens / max(elapsed, 1e-9),
            }
            on_log(done, metrics)
            window_loss, window_tokens, window_start = 0.0, 0, time.perf_counter()
    model.eval()
    return metrics


def _next_token_loss(model: torch.nn.Module, batch: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy, or its weighted mean with `weights` over the batch's tokens."""
    logits = model(input_ids=batch[:, :-1]).logits
    flat_logits, targets = logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1)
    if weights is None:  # the demo's loss exactly as before (the fused mean), so its numbers do not move
        return torch.nn.functional.cross_entropy(flat_logits, targets)
    losses = torch.nn.functional.cross_entropy(flat_logits, targets, reduction="none")
    target_weights = weights[:, 1:].reshape(-1).to(losses.dtype)
    return (losses * target_weights).sum() / target_weights.sum()


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, blocks: torch.Tensor, batch_size: int) -> float:
    """Mean next-token loss over all rows of `blocks`."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, blocks.shape[0], batch_size):
        batch = blocks[start : start + batch_size].to(next(model.parameters()).device)
        total += _next_token_loss(model, batch).item() * batch.shape[0]
        count += batch.shape[0]
    return total / max(count, 1)
