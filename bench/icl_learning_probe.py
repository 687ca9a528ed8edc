"""In-context task *learning* probe (#17): pretrain a small demo model on review families with
relabelled streams (`corpus.relabel_prob`, `flip_share`, `repeat_prob`), then

1. copy check: on fresh held-out relabelled streams, at every label whose mapping the stream has
   already shown, is the first token of the right label more likely than the other label's? Once
   with distinct inputs ("fuzzy": the label must follow the demonstrations' sentiment) and once with
   inputs that recur ("exact": a label can be copied from an earlier example of the same input);
2. `alignflow eval` on held-out reviews with mappings the model must take from the demonstrations:
   labels flipped, stand-in words (天/地), never-seen label words (甲/乙, the demo's
   learn_sentiment_zh_new_words); recognition of the known task beside them.

Usage (one torch thread, one setting):

    .venv/bin/python bench/icl_learning_probe.py --families sentiment_zh --relabel 0.9 --flip-share 0 \
        --repeat 1.0 --layers 4 --hidden 128 --steps 1500 --lr 3e-3 --answer-weight 5

`--answer-weight` scales the loss on label tokens (the tokens after 输出：); it is a probe lever, not a
pretrain setting. Prints the training seconds, the copy checks and accuracy with its 95% Wilson
interval per task and k.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import re
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASK_FILES = {
    "recognize_sentence_zh": None, "learn_sentiment_zh_new_words": None,
    "learn_flipped_zh": {"verbalizer": {"积极": "消极", "消极": "积极"}},
    "learn_standin_zh": {"verbalizer": {"积极": "天", "消极": "地"}},
}
LABEL = re.compile(r"(?:输出：|Output: )([^\n]*)")


def write_tasks(folder: Path) -> list[Path]:
    """The demo's task files, and the flipped / stand-in variants of its new-words task."""
    import yaml

    base = yaml.safe_load((REPO / "data/eval/tasks/learn_sentiment_zh_new_words.yaml").read_text(encoding="utf-8"))
    paths = []
    for name, change in TASK_FILES.items():
        if change is None:
            paths.append(REPO / "data/eval/tasks" / f"{name}.yaml")
            continue
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**base, "name": name, **change}, allow_unicode=True), encoding="utf-8")
        paths.append(path)
    return paths


def token_weights(tokenizer, text: str, answer_weight: float) -> tuple[list[int], list[float]]:
    """Token ids of `text` and a loss weight per token: `answer_weight` on label tokens, else 1."""
    encoded = tokenizer(text, return_offsets_mapping=True)
    spans = [m.span(1) for m in LABEL.finditer(text)]
    weights = [answer_weight if any(s < b and e > a for a, b in spans) else 1.0
               for s, e in encoded["offset_mapping"]]
    return encoded["input_ids"], weights


def copy_check(model, tokenizer, family_name: str, *, recurring: bool, n_streams: int = 300, items: int = 9,
               seed: int = 99) -> tuple[float, int]:
    """Share of labels (after the stream has shown every label once) whose first token the model
    ranks above the other labels' first tokens, on held-out relabelled streams with stand-in words."""
    import torch

    import alignflow.demo.corpus as corpus
    from alignflow.data.families import build_families, split_items

    rng = random.Random(seed)
    family = build_families()[family_name]
    _, held_out = split_items(family, 20)
    right = total = 0
    for _ in range(n_streams):
        chosen = rng.sample(held_out, items)
        if recurring:
            chosen = corpus.bursty(chosen, held_out, 3, rng)
        chosen = corpus.relabelled(chosen, corpus.labels_of(family), "zh", rng, flip_share=0.0)
        words = sorted({item.output for item in chosen})
        firsts = {w: tokenizer(w)["input_ids"][0] for w in words}
        if len(words) < 2 or len(set(firsts.values())) < len(words):
            continue
        ids, checks, seen = [tokenizer.bos_token_id], [], set()
        for item in chosen:
            ids += tokenizer(f"输入：{item.input}\n输出：")["input_ids"]
            if item.output in seen and len(seen) == len(words):
                checks.append((len(ids) - 1, firsts[item.output], [firsts[w] for w in words if w != item.output]))
            seen.add(item.output)
            ids += tokenizer(item.output + "\n\n")["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        for position, good, others in checks:
            total += 1
            right += all(logits[position, good] > logits[position, other] for other in others)
    return right / max(total, 1), total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default="sentiment_zh,topic_zh")
    p.add_argument("--relabel", type=float, default=0.8, help="corpus.relabel_prob")
    p.add_argument("--flip-share", type=float, default=0.5, help="corpus.flip_share")
    p.add_argument("--repeat", type=float, default=0.0, help="corpus.repeat_prob")
    p.add_argument("--streams", type=int, default=8000)
    p.add_argument("--max-items", type=int, default=9)
    p.add_argument("--description-prob", type=float, default=0.3)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--hidden", type=int, default=96)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--answer-weight", type=float, default=1.0, help="loss weight of label tokens (probe only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shots", default="0,1,4,8")
    args = p.parse_args()

    import torch

    import alignflow.demo.corpus as corpus
    from alignflow.cli import main as cli
    from alignflow.demo.model import build_llama
    from alignflow.demo.pretraining import LoopSettings, train_causal_lm
    from alignflow.demo.tokenizer import train_tokenizer
    from alignflow.evaluation.sweep import torch_threads

    families = args.families.split(",")
    rows = list(corpus.generate_streams(n_streams=args.streams, max_items=args.max_items,
                                        description_prob=args.description_prob, languages=["zh"], families=families,
                                        heldout_percent=20, seed=args.seed, relabel_prob=args.relabel,
                                        flip_share=args.flip_share, repeat_prob=args.repeat))
    tokenizer = train_tokenizer((row["text"] for row in rows), 600)
    ids, weights = [], []
    for row in rows:
        row_ids, row_weights = token_weights(tokenizer, row["text"], args.answer_weight)
        ids += [tokenizer.bos_token_id, *row_ids]
        weights += [1.0, *row_weights]
    n_rows = len(ids) // (args.seq + 1)
    blocks = torch.tensor(ids[: n_rows * (args.seq + 1)]).view(n_rows, args.seq + 1)
    weight_blocks = torch.tensor(weights[: n_rows * (args.seq + 1)]).view(n_rows, args.seq + 1)
    model = build_llama(tokenizer, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                        num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=1024, dropout=0.0, seed=args.seed)
    settings = LoopSettings(max_steps=args.steps, batch_size=args.batch, learning_rate=args.lr, warmup_steps=20,
                            min_lr_ratio=0.1, weight_decay=0.1, max_grad_norm=1.0, logging_steps=args.steps,
                            seed=args.seed)
    with torch_threads(1):
        started = time.perf_counter()
        train_causal_lm(model, blocks, settings, lambda step, metrics: None, token_weights=weight_blocks)
        seconds = time.perf_counter() - started
        checks = {(family, recurring): copy_check(model, tokenizer, family, recurring=recurring)
                  for family in families for recurring in (False, True)}
    folder = Path(tempfile.mkdtemp(prefix="alignflow-icl-learning-"))
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    command = ["eval", str(folder / "model"), "--shots", args.shots, "--add-bos", "--threads", "1",
               "--heldout-percent", "20", "--limit", "60", "--output", str(folder / "results.json")]
    for task in write_tasks(folder):
        command += ["--task", str(task)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli(command) == 0
    print(json.dumps(vars(args)), f"train {seconds:.0f} s, {n_rows} blocks of {args.seq}")
    for (family, recurring), (share, total) in checks.items():
        print(f"  copy check {family} {'exact' if recurring else 'fuzzy'}: {share:.3f} of {total} labels")
    for row in json.loads((folder / "results.json").read_text(encoding="utf-8"))["summary"]:
        print(f"  {row['task']:30s} k={row['k']:2d}  acc {row['accuracy']:.3f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]")


if __name__ == "__main__":
    main()
