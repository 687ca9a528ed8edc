"""PPO with a KL penalty to a frozen reference policy (the notes' RLHF stage 3), in plain sight.

One step: roll out a batch of prompts (alignflow.rl.rollout), turn the reward model's sequence
score and the per-token KL to the reference into per-token rewards, estimate advantages with GAE,
then run several epochs of clipped policy and value updates over minibatches. The maths lives in
alignflow.rl.ppo_math; this loop only wires it, logs it and checkpoints it.

Under a launched job (`accelerator` given) every rank rolls out its slice of the prompts, the
rollouts are gathered so each rank holds the whole batch (advantages, whitening, metrics and the
KL controller are then the same everywhere), and each minibatch is split over the ranks, with
policy and value model wrapped as one module by `accelerator.prepare` (DDP). Losses are divided by
the token count of the whole minibatch, so the averaged gradient is the one-process gradient.
Sampling is seeded per prompt slot (alignflow.models.generation), so the rollouts are the same too.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from alignflow.models.generation import row_seeds
from alignflow.models.loading import response_stop_ids
from alignflow.rl import ppo_math as pm
from alignflow.rl.rollout import RewardFunction, response_logprobs, response_values, rollout
from alignflow.schemas.stages.ppo import PPOStageConfig
from alignflow.training.sft_loss import SFTReplay, sft_loss
from alignflow.training.stability import check_finite


class PolicyAndValue(torch.nn.Module):
    """The two trained models as one module, so that one DDP wrapper syncs both in one step; a
    replayed SFT batch (alignflow.training.sft_loss) goes through the same forward for the same reason."""

    def __init__(self, policy, value_model) -> None:
        super().__init__()
        self.policy, self.value_model = policy, value_model

    def forward(self, query_ids, query_mask, response_ids, response_mask, temperature: float, replay_batch=None):
        logprobs, entropy = response_logprobs(self.policy, query_ids, query_mask, response_ids, response_mask,
                                              temperature, with_entropy=True)
        values = response_values(self.value_model, query_ids, query_mask, response_ids, response_mask)
        replayed = None if replay_batch is None else sft_loss(self.policy, replay_batch)
        return logprobs, entropy, values, replayed


@dataclass
class PPOState:
    """What a checkpoint must restore besides the weights and the optimizer."""

    step: int = 0
    kl_coef: float = 0.0


class PPOTrainer:
    """Policy (trained), reference (frozen), value model (trained), reward function (frozen); with a
    `replay`, each update adds `settings.sft_loss_coef` times the SFT loss on one replayed batch."""

    def __init__(self, policy, reference, value_model, reward: RewardFunction, tokenizer, prompts: Sequence[str],
                 settings: PPOStageConfig, seed: int, accelerator=None, replay: SFTReplay | None = None) -> None:
        self.policy, self.reference, self.value_model = policy, reference, value_model
        self.reward, self.tokenizer, self.prompts, self.settings = reward, tokenizer, list(prompts), settings
        self.seed, self.replay = seed, replay
        for parameter in reference.parameters():
            parameter.requires_grad_(False)
        reference.eval()
        self.learner = PolicyAndValue(policy, value_model)
        self.parameters = [p for p in self.learner.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=settings.learning_rate, eps=1e-5,
                                           weight_decay=settings.weight_decay)
        self.accelerator, self.world, self.rank = accelerator, 1, 0
        if accelerator is not None:
            self.learner, self.optimizer = accelerator.prepare(self.learner, self.optimizer)
            self.world, self.rank = accelerator.num_processes, accelerator.process_index
        controller = pm.AdaptiveKLController if settings.adaptive_kl else pm.FixedKLController
        self.kl = (controller(settings.kl_coef, settings.target_kl, settings.kl_horizon) if settings.adaptive_kl
                   else controller(settings.kl_coef))
        self.state = PPOState(0, settings.kl_coef)
        self.samples: list[dict] = []  # the latest rollout's prompts, responses and scores

    # -- one step ---------------------------------------------------------------------------------

    def next_prompts(self) -> list[str]:
        rng = random.Random(self.seed * 100_003 + self.state.step)
        return [self.prompts[rng.randrange(len(self.prompts))] for _ in range(self.settings.batch_size)]

    def step(self) -> dict[str, float]:
        s = self.settings
        prompts = self.next_prompts()
        seeds = row_seeds(self.seed * 100_003 + self.state.step, 0, len(prompts))
        mine = self.my_share(list(range(len(prompts))))
        torch.manual_seed(self.seed * 100_003 + self.state.step)
        started = time.perf_counter()
        batch, texts = rollout(self.policy, self.reference, self.value_model, self.reward, self.tokenizer,
                               [prompts[i] for i in mine], [seeds[i] for i in mine], max_new_tokens=s.max_new_tokens,
                               temperature=s.temperature, top_p=s.top_p)
        if self.world > 1:
            batch, texts = self.gathered(batch, texts)
        rollout_seconds = time.perf_counter() - started
        mask = batch.response_mask.float()
        scores = batch.scores
        if s.missing_eos_penalty is not None:
            scores = pm.eos_penalty(scores, batch.response_ids, response_stop_ids(self.tokenizer),
                                    s.missing_eos_penalty)
        coef = float(self.kl.value)
        rewards, kl = pm.per_token_rewards(scores, batch.logprobs, batch.ref_logprobs, mask, coef, s.kl_estimator)
        advantages, returns = pm.gae(rewards, batch.values, mask, s.gamma, s.lam)
        if s.whiten_advantages:
            advantages = pm.masked_whiten(advantages, mask)
        started = time.perf_counter()
        updates = [self.update(batch, advantages, returns, indices)
                   for _ in range(s.ppo_epochs) for indices in self.minibatches()]
        update_seconds = time.perf_counter() - started
        kl_per_sequence = (kl * mask).sum(1)
        self.kl.update(float(kl_per_sequence.mean()), s.batch_size)
        self.state = PPOState(self.state.step + 1, float(self.kl.value))
        self.samples = [{"prompt": p, "response": t, "score": float(x)} for p, t, x in zip(prompts, texts, scores,
                                                                                              strict=True)]
        lengths = mask.sum(1)
        metrics = {
            "reward_mean": float(batch.scores.mean()),
            "score_with_penalty_mean": float(scores.mean()),
            "kl_penalty_mean": float((-coef * kl * mask).sum(1).mean()),
            "kl_mean": float(kl_per_sequence.mean()),
            "kl_per_token": float(pm.masked_mean(kl, mask)),
            "kl_coef": coef,
            "response_length": float(lengths.mean()),
            "missing_eos": float((batch.response_mask.sum(1) == batch.response_mask.shape[1]).float().mean()),
            "advantage_mean": float(pm.masked_mean(advantages, mask)),
            "explained_variance": float(pm.explained_variance(batch.values, returns, mask)),
            "rollout_tokens_per_second": float(lengths.sum()) / max(rollout_seconds, 1e-9),
            "rollout_seconds": rollout_seconds,
            "update_seconds": update_seconds,
        }
        for key in updates[0]:
            metrics[key] = sum(u[key] for u in updates) / len(updates)
        return metrics

    def my_share(self, indices: list[int]) -> list[int]:
        """This rank's contiguous slice of `indices` (all of them in one process); gathering the
        slices in rank order gives `indices` back."""
        size = len(indices) // self.world
        return indices[self.rank * size:(self.rank + 1) * size]

    def gathered(self, batch: pm.RolloutBatch, texts: list[str]) -> tuple[pm.RolloutBatch, list[str]]:
        """Every rank's rollout, padded to one shape (prompts on the left, responses on the right) and
        concatenated in rank order: the batch one process would have rolled out."""
        from accelerate.utils import gather_object

        accelerator = self.accelerator
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id

        def together(tensor: torch.Tensor, value, left: bool = False) -> torch.Tensor:
            return accelerator.gather(accelerator.pad_across_processes(tensor, dim=1, pad_index=value,
                                                                       pad_first=left))

        return pm.RolloutBatch(
            query_ids=together(batch.query_ids, pad, left=True), query_mask=together(batch.query_mask, 0, left=True),
            response_ids=together(batch.response_ids, pad), response_mask=together(batch.response_mask, 0),
            logprobs=together(batch.logprobs, 0), ref_logprobs=together(batch.ref_logprobs, 0),
            values=together(batch.values, 0), scores=accelerator.gather(batch.scores),
        ), gather_object(texts)

    def minibatches(self) -> list[list[int]]:
        order = list(range(self.settings.batch_size))
        random.Random(self.seed + 7 * self.state.step).shuffle(order)
        size = self.settings.mini_batch_size
        return [order[i:i + size] for i in range(0, len(order), size)]

    def update(self, batch: pm.RolloutBatch, advantages: torch.Tensor, returns: torch.Tensor,
               indices: list[int]) -> dict[str, float]:
        """One clipped step on the minibatch `indices`; a rank computes its slice's share of the means."""
        s = self.settings
        tokens = batch.response_mask[torch.tensor(indices)].float().sum()  # of the whole minibatch
        pick = torch.tensor(self.my_share(indices))
        query_ids, query_mask = batch.query_ids[pick], batch.query_mask[pick]
        response_ids, mask = batch.response_ids[pick], batch.response_mask[pick]
        self.learner.train()
        replay_batch = None if self.replay is None else self.replay.next_batch(query_ids.device)
        logprobs, entropy, values, replayed = self.learner(query_ids, query_mask, response_ids, mask, s.temperature,
                                                           replay_batch)
        policy_loss, policy_clip, approx_kl = pm.clipped_policy_loss(logprobs, batch.logprobs[pick],
                                                                     advantages[pick], mask, s.clip_range, tokens)
        value_loss, value_clip = pm.clipped_value_loss(values, batch.values[pick], returns[pick], mask,
                                                       s.clip_range_value, tokens)
        loss = policy_loss + s.vf_coef * value_loss
        sft_term = torch.zeros(()) if replayed is None else s.sft_loss_coef * replayed
        self.optimizer.zero_grad(set_to_none=True)
        if self.accelerator is None:
            (loss + sft_term).backward()
        else:  # DDP averages the ranks' gradients: the minibatch shares add up, each rank's SFT mean averages
            self.accelerator.backward(loss * self.world + sft_term)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, s.max_grad_norm)
        self.optimizer.step()
        stats = torch.stack([policy_loss.detach(), value_loss.detach(), policy_clip, value_clip, approx_kl,
                             pm.masked_share(entropy.detach(), mask, tokens)])
        if self.accelerator is not None:
            stats = self.accelerator.reduce(stats, "sum")
        names = ("policy_loss", "value_loss", "policy_clip_fraction", "value_clip_fraction", "approx_kl", "entropy")
        extra = {} if replayed is None else {"sft_loss": float(replayed.detach())}
        return {**dict(zip(names, stats.tolist(), strict=True)), "grad_norm": float(grad_norm), **extra}

    # -- checkpoints -----------------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """Weights, optimizer, controller and step; `state.json` last, so a complete folder has it.
        In a launched job the main process writes (every rank holds the same weights)."""
        import json

        if self.rank != 0:
            return
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"policy": self.policy.state_dict(), "value": self.value_model.state_dict(),
                    "optimizer": self.optimizer.state_dict()}, folder / "weights.pt")
        (folder / "state.json").write_text(json.dumps(asdict(self.state)))

    def load(self, folder: Path) -> None:
        import json

        saved = torch.load(folder / "weights.pt", weights_only=True)
        self.policy.load_state_dict(saved["policy"])
        self.value_model.load_state_dict(saved["value"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.state = PPOState(**json.loads((folder / "state.json").read_text()))
        self.kl.value = self.state.kl_coef

    def train(self, on_step: Callable[[int, dict[str, float]], None] | None = None,
              checkpoints: Path | None = None, save_steps: int = 0) -> None:
        """Run to `settings.max_steps`, resuming from the newest complete checkpoint under `checkpoints`."""
        if checkpoints is not None:
            done = sorted((int(p.name.split("-")[1]), p) for p in checkpoints.glob("step-*")
                          if (p / "state.json").is_file())
            if done:
                self.load(done[-1][1])
        while self.state.step < self.settings.max_steps:
            metrics = self.step()
            check_finite(metrics["policy_loss"] + metrics["value_loss"], self.state.step, str(checkpoints))
            if on_step:
                on_step(self.state.step, metrics)
            if checkpoints is not None and save_steps and self.state.step % save_steps == 0:
                self.save(checkpoints / f"step-{self.state.step}")
