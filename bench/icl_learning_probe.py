"""In-context task *learning* probe (#17): pretrain a small demo model on the review families with
relabelled streams (`corpus.relabel_prob`), then score held-out reviews through `alignflow eval`
with mappings the model must take from the demonstrations: labels flipped, stand-in words it
was trained on (天/地), and never-seen label words (甲/乙, the demo's learn_sentiment_zh_new_words).
Recognition of the known task is printed beside them. Usage (one torch thread, one setting):

    .venv/bin/python bench/icl_learning_probe.py --relabel 0.8 --steps 2000 --layers 3 --hidden 96

Prints the training seconds and accuracy with its 95% Wilson interval per task and k.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASK_FILES = {
    "recognize_sentence_zh": None, "learn_sentiment_zh_new_words": None,
    "learn_flipped_zh": {"verbalizer": {"积极": "消极", "消极": "积极"}},
    "learn_standin_zh": {"verbalizer": {"积极": "天", "消极": "地"}},
}


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--relabel", type=float, default=0.8, help="corpus.relabel_prob")
    p.add_argument("--standin-only", action="store_true", help="relabel with stand-in words only, never flip")
    p.add_argument("--streams", type=int, default=8000)
    p.add_argument("--max-items", type=int, default=9)
    p.add_argument("--description-prob", type=float, default=0.3)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--hidden", type=int, default=96)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shots", default="0,1,4,8")
    args = p.parse_args()

    import alignflow.demo.corpus as corpus
    from alignflow.cli import main as cli
    from alignflow.demo.model import build_llama
    from alignflow.demo.pretraining import LoopSettings, pack_blocks, train_causal_lm
    from alignflow.demo.tokenizer import train_tokenizer
    from alignflow.evaluation.sweep import torch_threads

    rows = list(corpus.generate_streams(n_streams=args.streams, max_items=args.max_items,
                                        description_prob=args.description_prob, languages=["zh"],
                                        families=["sentiment_zh", "topic_zh"], heldout_percent=20, seed=args.seed,
                                        relabel_prob=args.relabel, flip_share=0.0 if args.standin_only else 0.5))
    tokenizer = train_tokenizer((row["text"] for row in rows), 600)
    blocks = pack_blocks([tokenizer(row["text"])["input_ids"] for row in rows], tokenizer.bos_token_id, args.seq)
    model = build_llama(tokenizer, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                        num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=1024, dropout=0.0, seed=args.seed)
    settings = LoopSettings(max_steps=args.steps, batch_size=16, learning_rate=args.lr, warmup_steps=20,
                            min_lr_ratio=0.1, weight_decay=0.1, max_grad_norm=1.0, logging_steps=50, seed=args.seed)
    started = time.perf_counter()
    with torch_threads(1):
        train_causal_lm(model, blocks, settings, lambda step, metrics: None)
    seconds = time.perf_counter() - started
    folder = Path(tempfile.mkdtemp(prefix="alignflow-icl-learning-"))
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    command = ["eval", str(folder / "model"), "--shots", args.shots, "--add-bos", "--threads", "1",
               "--heldout-percent", "20", "--limit", "60", "--output", str(folder / "results.json")]
    for task in write_tasks(folder):
        command += ["--task", str(task)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli(command) == 0
    print(json.dumps(vars(args)), f"train {seconds:.0f} s, {len(blocks)} blocks of {args.seq}")
    for row in json.loads((folder / "results.json").read_text(encoding="utf-8"))["summary"]:
        print(f"  {row['task']:30s} k={row['k']:2d}  acc {row['accuracy']:.3f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]")


if __name__ == "__main__":
    main()
