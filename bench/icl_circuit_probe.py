"""Which copy circuit forms in a demo-size model within the CPU budget (#17: why task learning does not appear).

Task learning with never-seen label words needs the model to find, in its context, the demonstration whose
input matches the query and copy the label that follows it. This probe times how fast that circuit forms on
synthetic streams, from easiest to the notes' format, in a Llama built like the demo's (build_llama,
train_causal_lm, the demo tokenizer):

* `induction`: BOS and a random sequence repeated: with a fixed period (`--period fixed`) a head that
  looks a fixed distance back copies it; with periods of 8-31 tokens only a content-matching induction
  head (a previous-token head and a head that matches on it) does;
* `recall --format gap0`: `keylabel` lines: the canonical induction pattern;
* `recall --format short`: `key：label` lines, 4 keys per stream each with its own stand-in label (random
  CJK character), 16 lines drawn from them: the key sits 2 tokens before its label;
* `recall --format full`: the same in the notes' format (`输入：key\\n输出：label`): the key sits 5 tokens before
  its label, as a review's sentiment words sit 6-8 tokens before it in the eval's learn_* tasks;
* `recall --keylen 0`: whole training reviews of sentiment_zh as keys (exact recurrence);
* `recall --first-format gap0 --first-steps N`: a curriculum: N steps on the first format at a
  constant learning rate, then `--format` on its own schedule.

Prints, every `--every` steps, the training loss and the share of repeated keys whose label the model ranks
first among the stream's labels (recall; chance 1 / keys) or of repeated tokens it predicts
(induction). One torch thread:

    .venv/bin/python bench/icl_circuit_probe.py induction
    .venv/bin/python bench/icl_circuit_probe.py recall --format full --keylen 1
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time

import torch

import alignflow.demo.corpus as corpus
from alignflow.data.families import build_families, split_items
from alignflow.demo.model import build_llama
from alignflow.demo.pretraining import LoopSettings, pack_blocks, train_causal_lm
from alignflow.demo.tokenizer import train_tokenizer


def recall_item(key: str, label: str, form: str) -> str:
    if form == "gap0":
        return f"{key}{label}\n"
    return f"输入：{key}\n输出：{label}\n\n" if form == "full" else f"{key}：{label}\n"


class RecallStreams:
    """Streams of `keys` keys, each with its own stand-in label, `items` lines drawn from them."""

    def __init__(self, keylen: int, form: str, keys: int = 4, items: int = 16) -> None:
        train, _ = split_items(build_families()["sentiment_zh"], 20)
        self.reviews = [item.input for item in train]
        self.chars = sorted({c for review in self.reviews for c in review if c != "。"})
        self.keylen, self.form, self.keys, self.items = keylen, form, keys, items

    def draw(self, rng: random.Random) -> tuple[list[str], list[str], list[int]]:
        if self.keylen:
            keys = ["".join(rng.choice(self.chars) for _ in range(self.keylen)) for _ in range(self.keys)]
        else:
            keys = rng.sample(self.reviews, self.keys)
        labels: list[str] = []
        while len(labels) < self.keys:
            if (word := corpus.stand_in("zh", rng)) not in labels:
                labels.append(word)
        return keys, labels, [rng.randrange(self.keys) for _ in range(self.items)]

    def text(self, rng: random.Random) -> str:
        keys, labels, order = self.draw(rng)
        return "".join(recall_item(keys[i], labels[i], self.form) for i in order)


def recall_accuracy(model, tokenizer, streams: RecallStreams, n_streams: int = 100) -> float:
    """Share of repeated keys whose label's first token the model ranks first among the stream's labels."""
    rng, right, total = random.Random(7), 0, 0
    for _ in range(n_streams):
        keys, labels, order = streams.draw(rng)
        firsts = [tokenizer(label)["input_ids"][0] for label in labels]
        if len(set(firsts)) < len(firsts):
            continue
        ids, checks, seen = [tokenizer.bos_token_id], [], set()
        for i in order:
            prompt, after = recall_item(keys[i], "\x00", streams.form).split("\x00")
            ids += tokenizer(prompt)["input_ids"]
            if i in seen:
                checks.append((len(ids) - 1, i))
            seen.add(i)
            ids += tokenizer(labels[i] + after)["input_ids"]
        logits = model(input_ids=torch.tensor([ids])).logits[0]
        for position, i in checks:
            total += 1
            right += int(logits[position, firsts].argmax()) == i
    return right / max(total, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["induction", "recall"])
    p.add_argument("--format", default="full", choices=["full", "short", "gap0"],
                   help="recall lines: 输入：key\\n输出：label, key：label, or keylabel")
    p.add_argument("--keys", type=int, default=4, help="recall: distinct keys (and labels) per stream")
    p.add_argument("--items", type=int, default=16, help="recall: lines per stream")
    p.add_argument("--streams", type=int, default=8000, help="recall: training streams (few: seen many times)")
    p.add_argument("--period", default="varied", choices=["fixed", "varied"],
                   help="induction: the repeat always 24 tokens back (a positional head suffices) or not")
    p.add_argument("--keylen", type=int, default=1, help="random key characters; 0: whole reviews")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--first-format", default=None, choices=["full", "short", "gap0"],
                   help="recall curriculum: train on this format first, at a constant learning rate")
    p.add_argument("--first-steps", type=int, default=0, help="recall curriculum: steps on --first-format")
    args = p.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(0)
    if args.mode == "recall":
        streams = RecallStreams(args.keylen, args.format, args.keys, args.items)
        texts = [streams.text(rng) for _ in range(args.streams)]
        first_texts = []
        if args.first_format:
            first = RecallStreams(args.keylen, args.first_format, args.keys, args.items)
            first_texts = [first.text(rng) for _ in range(args.streams)]
        tokenizer = train_tokenizer(texts + first_texts, 1024)
        blocks = pack_blocks([tokenizer(text)["input_ids"] for text in texts], tokenizer.bos_token_id, 256)
        batch = 8
    else:
        tokenizer = train_tokenizer(["abc def"] * 10, 300)
        generator = torch.Generator().manual_seed(0)

        def repeated(n: int) -> torch.Tensor:
            """BOS, then a random sequence repeated to 64 tokens: 24 tokens long (--period fixed: a head that
            looks 24 back suffices), or 8-31 long (varied: only a content-matching induction head helps)."""
            rows = []
            for _ in range(n):
                length = 24 if args.period == "fixed" else int(torch.randint(8, 32, (1,), generator=generator))
                tokens = torch.randint(10, len(tokenizer), (length,), generator=generator)
                body = tokens.repeat(64 // length + 1)[:64]
                rows.append(torch.cat([torch.tensor([tokenizer.bos_token_id]), body]))
            return torch.stack(rows)

        blocks, batch, held_out = repeated(4000), 32, repeated(200)
    model = build_llama(tokenizer, hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                        num_hidden_layers=args.layers, num_attention_heads=args.heads,
                        num_key_value_heads=args.heads, max_position_embeddings=1024, dropout=0.0, seed=0)
    started = time.perf_counter()

    def report(step: int, metrics: dict[str, float], scored: RecallStreams | None = None,
               last: int = args.steps) -> None:
        if step % args.every and step != last:
            return
        model.eval()
        with torch.no_grad():
            if args.mode == "recall":
                score = recall_accuracy(model, tokenizer, scored or streams)
            else:
                predicted = model(input_ids=held_out[:, :-1]).logits.argmax(-1)
                score = (predicted[:, 32:] == held_out[:, 33:]).float().mean().item()  # repeats at any period
        model.train()
        print(f"step {step:5d}  {time.perf_counter() - started:5.0f} s  loss {metrics['train_loss']:.3f}  "
              f"{'recall' if args.mode == 'recall' else 'repeat'} accuracy {score:.3f}", flush=True)

    settings = LoopSettings(max_steps=args.steps, batch_size=batch, learning_rate=args.lr, warmup_steps=50,
                            min_lr_ratio=0.1, weight_decay=0.1, max_grad_norm=1.0, logging_steps=50, seed=0)
    print(vars(args), f"{blocks.shape[0]} blocks of {blocks.shape[1]} tokens, batch {batch}", flush=True)
    if args.mode == "recall" and args.first_format:
        first_blocks = pack_blocks([tokenizer(text)["input_ids"] for text in first_texts],
                                   tokenizer.bos_token_id, 256)
        constant = dataclasses.replace(settings, max_steps=args.first_steps, min_lr_ratio=1.0)
        train_causal_lm(model, first_blocks, constant,
                        lambda step, metrics: report(step, metrics, first, args.first_steps))
        print(f"-- switched from --first-format {args.first_format} to --format {args.format}", flush=True)
    train_causal_lm(model, blocks, settings, report)

if __name__ == "__main__":
    main()
