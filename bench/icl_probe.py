"""In-context task-recognition probe for the demo base model.

Builds corpus -> tokenizer -> model, pretrains with `train_causal_lm`, then measures multiple-choice
accuracy on held-out items with NO task line, for k in {0, 1, 2, 4, 8} demonstrations:

* for a held-out item of family F with input x, the choices are the outputs of every family of the
  same kind on x (deduplicated; items whose correct output equals another family's are skipped);
* the k demonstrations are k *training* items of family F (seeded random), via `format_example`;
* prompt = "".join(demos) + "输入：x\\n输出：" (English labels when the language is en), after BOS;
* score(choice) = sum of log-probs of the choice's tokens given the prompt (lm-evaluation-harness
  style: tokenise prompt+choice, take the tokens after the prompt's; trailing whitespace of the
  prompt moves to the choice so the BPE boundary matches training), argmax wins.

If the model recognises the task from demonstrations, accuracy rises from ~chance at k=0 to well
above it at k>=1. The defaults are the best configuration found (1.84M training tokens, about
4-5 minutes on 2 idle CPU cores; much longer when other jobs share them):

    .venv/bin/python bench/icl_probe.py --threads 1

acc follows the brief (sum of log-probs); acc_norm divides by the choice's UTF-8 bytes, which
removes the bias of the sum toward one-token answers (the word kind's "length" digits).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict

import torch

from alignflow.data.families import FIELD_LABELS, build_families, split_items
from alignflow.demo.corpus import format_example, format_stream, generate_streams
from alignflow.demo.model import build_llama
from alignflow.demo.pretraining import LoopSettings, evaluate_loss, pack_blocks, train_causal_lm
from alignflow.demo.tokenizer import train_tokenizer

SHOTS = (0, 1, 2, 4, 8)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("corpus")
    g.add_argument("--n-streams", type=int, default=20000)
    g.add_argument("--max-items", type=int, default=9)
    g.add_argument("--description-prob", type=float, default=0.3)
    g.add_argument("--heldout-percent", type=int, default=20)
    g.add_argument("--languages", default="zh,en")
    g.add_argument("--vocab-size", type=int, default=1024)
    g = p.add_argument_group("model")
    g.add_argument("--hidden", type=int, default=128)
    g.add_argument("--intermediate", type=int, default=384)
    g.add_argument("--layers", type=int, default=4)
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--kv-heads", type=int, default=2)
    g = p.add_argument_group("training")
    g.add_argument("--seq-len", type=int, default=128)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--steps", type=int, default=900)
    g.add_argument("--lr", type=float, default=3e-3)
    g.add_argument("--warmup", type=int, default=50)
    g.add_argument("--min-lr-ratio", type=float, default=0.1)
    g.add_argument("--weight-decay", type=float, default=0.1)
    g.add_argument("--log-every", type=int, default=100)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    g = p.add_argument_group("probe")
    g.add_argument("--probe-items", type=int, default=60, help="held-out items per input kind")
    g.add_argument("--probe-seed", type=int, default=1)
    g.add_argument("--shots", default=",".join(map(str, SHOTS)))
    g.add_argument("--score-end", action="store_true",
                   help="also score the end-of-example newlines after each choice (so '1' no longer beats '12')")
    g.add_argument("--load", default="", help="skip training: probe a model saved with --save")
    g.add_argument("--save", default="", help="save the trained model and tokenizer to this folder")
    g.add_argument("--json", default="", help="also write the results to this JSON file")
    return p.parse_args(argv)


def heldout_streams(n_streams: int, max_items: int, description_prob: float, languages: list[str],
                    heldout_percent: int, seed: int) -> list[str]:
    """Streams like the corpus's but built from held-out items only (for a held-out loss)."""
    rng = random.Random(seed)
    catalogue = build_families()
    names = sorted(catalogue)
    pools = {n: split_items(catalogue[n], heldout_percent)[1] for n in names}
    texts = []
    for _ in range(n_streams):
        family = catalogue[rng.choice(names)]
        usable = [lang for lang in family.languages if lang in languages] or list(family.languages)
        language = rng.choice(usable)
        items = rng.sample(pools[family.name], min(rng.randint(1, max_items), len(pools[family.name])))
        description = family.description[language] if rng.random() < description_prob else None
        texts.append(format_stream(items, language, description))
    return texts


def build_probe(heldout_percent: int, languages: list[str], per_kind: int, seed: int) -> dict[str, list[dict]]:
    """Per kind: held-out questions {family, language, input, choices, answer, demo_pool}."""
    rng = random.Random(seed)
    catalogue = build_families()
    by_kind: dict[str, list] = defaultdict(list)
    for family in catalogue.values():
        by_kind[family.kind].append(family)
    probe: dict[str, list[dict]] = {}
    for kind, families in sorted(by_kind.items()):
        outputs = {f.name: {i.input: i.output for i in f.items} for f in families}
        candidates = []
        for family in families:
            train, heldout = split_items(family, heldout_percent)
            for item in heldout:
                others = {outputs[g.name][item.input] for g in families if g.name != family.name}
                if item.output in others:
                    continue  # ambiguous: the correct answer is also another task's answer
                choices = sorted(others | {item.output})
                usable = [lang for lang in family.languages if lang in languages] or list(family.languages)
                candidates.append({"family": family.name, "input": item.input, "answer": item.output,
                                   "choices": choices, "languages": usable, "train": train})
        rng.shuffle(candidates)
        questions = candidates[:per_kind]
        for q in questions:
            q["language"] = rng.choice(q.pop("languages"))
            q["demos"] = rng.sample(q.pop("train"), max(SHOTS))  # prefixes give k = 0, 1, 2, 4, 8
        probe[kind] = questions
    return probe


def _encode_pair(tokenizer, prompt: str, choice: str) -> tuple[list[int], int]:
    """(ids of BOS + prompt + choice, number of leading ids that belong to the prompt)."""
    stripped = prompt.rstrip(" ")
    continuation = prompt[len(stripped):] + choice
    context_ids = [tokenizer.bos_token_id] + tokenizer(stripped, add_special_tokens=False)["input_ids"]
    whole_ids = [tokenizer.bos_token_id] + tokenizer(stripped + continuation, add_special_tokens=False)["input_ids"]
    return whole_ids, len(context_ids)


@torch.no_grad()
def score_sequences(model, tokenizer, pairs: list[tuple[list[int], int]], batch_size: int = 64) -> list[float]:
    """Sum of log-probs of the tokens after each context (right-padded batches)."""
    scores: list[float] = []
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
    result = [0.0] * len(pairs)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        longest = max(len(pairs[i][0]) for i in idx)
        ids = torch.full((len(idx), longest), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(idx), longest), dtype=torch.long)
        for row, i in enumerate(idx):
            seq = pairs[i][0]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        for row, i in enumerate(idx):
            seq, n_context = pairs[i]
            targets = torch.tensor(seq[n_context:])
            positions = torch.arange(n_context - 1, len(seq) - 1)
            result[i] = logprobs[row, positions, targets].sum().item()
    scores.extend(result)
    return scores


def run_probe(model, tokenizer, probe: dict[str, list[dict]], shots: list[int], score_end: bool = False) -> dict:
    model.eval()
    table: dict = {}
    for k in shots:
        row: dict = {}
        total_correct = total_norm = total_n = 0
        total_chance = 0.0
        for kind, questions in probe.items():
            pairs, spans = [], []
            for q in questions:
                labels = FIELD_LABELS[q["language"]]
                demos = "".join(format_example(d, q["language"]) for d in q["demos"][:k])
                prompt = f"{demos}{labels['input']}{q['input']}\n{labels['output']}"
                start = len(pairs)
                end = "\n\n" if score_end else ""
                pairs.extend(_encode_pair(tokenizer, prompt, c + end) for c in q["choices"])
                spans.append((start, len(pairs)))
            scores = score_sequences(model, tokenizer, pairs)
            correct = correct_norm = 0
            chance = 0.0
            for q, (a, b) in zip(questions, spans, strict=True):
                best = max(range(a, b), key=lambda j: scores[j])
                correct += q["choices"][best - a] == q["answer"]
                # acc_norm (lm-evaluation-harness): log-prob per UTF-8 byte of the choice
                best = max(range(a, b), key=lambda j: scores[j] / len(q["choices"][j - a].encode("utf-8")))
                correct_norm += q["choices"][best - a] == q["answer"]
                chance += 1 / len(q["choices"])
            row[kind] = {"acc": correct / len(questions), "acc_norm": correct_norm / len(questions),
                         "chance": chance / len(questions), "n": len(questions)}
            total_correct += correct
            total_norm += correct_norm
            total_n += len(questions)
            total_chance += chance
        row["overall"] = {"acc": total_correct / total_n, "acc_norm": total_norm / total_n, "chance": total_chance / total_n, "n": total_n}
        table[k] = row
    return table


def print_table(table: dict, metric: str = "acc") -> None:
    kinds = list(next(iter(table.values())).keys())
    k0 = next(iter(table))
    print(f"{metric:<7}" + "".join(f"{kind:>13}" for kind in kinds))
    print(f"{'chance':<7}" + "".join(f"{table[k0][kind]['chance']:>13.2f}" for kind in kinds))
    for k, row in table.items():
        print(f"k={k:<5}" + "".join(f"{row[kind][metric]:>13.2f}" for kind in kinds))
    print(f"{'n':<7}" + "".join(f"{table[k0][kind]['n']:>13d}" for kind in kinds))


def probe_and_print(model, tokenizer, args: argparse.Namespace, languages: list[str]) -> dict:
    t_probe = time.perf_counter()
    probe = build_probe(args.heldout_percent, languages, args.probe_items, args.probe_seed)
    table = run_probe(model, tokenizer, probe, [int(s) for s in args.shots.split(",")], args.score_end)
    print(f"multiple-choice accuracy on held-out items, no task line (probe {time.perf_counter() - t_probe:.1f}s):")
    print_table(table)
    print("length-normalised (log-prob per byte of the choice):")
    print_table(table, "acc_norm")
    return table


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    languages = args.languages.split(",")
    if args.load:
        from transformers import AutoTokenizer, LlamaForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(args.load)
        model = LlamaForCausalLM.from_pretrained(args.load)
        return {"accuracy": probe_and_print(model, tokenizer, args, languages)}
    t0 = time.perf_counter()
    rows = list(generate_streams(n_streams=args.n_streams, max_items=args.max_items,
                                 description_prob=args.description_prob, languages=languages, families=None,
                                 heldout_percent=args.heldout_percent, seed=args.seed))
    texts = [r["text"] for r in rows]
    tokenizer = train_tokenizer(texts, args.vocab_size)
    blocks = pack_blocks([tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts],
                         tokenizer.bos_token_id, args.seq_len)
    held_texts = heldout_streams(max(200, args.n_streams // 20), args.max_items, args.description_prob,
                                 languages, args.heldout_percent, args.seed + 1)
    held_blocks = pack_blocks([tokenizer(t, add_special_tokens=False)["input_ids"] for t in held_texts],
                              tokenizer.bos_token_id, args.seq_len)
    corpus_tokens = blocks.numel()
    print(f"corpus: {len(texts)} streams, {corpus_tokens} tokens ({blocks.shape[0]} blocks of {args.seq_len}), "
          f"vocab {len(tokenizer)}, prep {time.perf_counter() - t0:.1f}s", flush=True)

    model = build_llama(tokenizer, hidden_size=args.hidden, intermediate_size=args.intermediate,
                        num_hidden_layers=args.layers, num_attention_heads=args.heads,
                        num_key_value_heads=args.kv_heads, max_position_embeddings=max(512, args.seq_len),
                        dropout=0.0, seed=args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    settings = LoopSettings(max_steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                            warmup_steps=args.warmup, min_lr_ratio=args.min_lr_ratio,
                            weight_decay=args.weight_decay, max_grad_norm=1.0, logging_steps=args.log_every,
                            seed=args.seed)
    trained_tokens = args.steps * args.batch_size * args.seq_len
    print(f"model: {n_params / 1e6:.2f}M params; training {args.steps} steps x {args.batch_size} x {args.seq_len} "
          f"= {trained_tokens / 1e6:.2f}M tokens ({trained_tokens / corpus_tokens:.2f} epochs)", flush=True)

    def on_log(step: int, m: dict[str, float]) -> None:
        print(f"  step {step:>5}  loss {m['train_loss']:.3f}  lr {m['learning_rate']:.2e}  "
              f"{m['tokens_per_second']:.0f} tok/s  t={time.perf_counter() - t_train:.0f}s", flush=True)

    t_train = time.perf_counter()
    final = train_causal_lm(model, blocks, settings, on_log)
    train_seconds = time.perf_counter() - t_train
    heldout_loss = evaluate_loss(model, held_blocks, 32)
    print(f"trained in {train_seconds:.1f}s ({trained_tokens / train_seconds:.0f} tok/s); "
          f"final train loss {final['train_loss']:.3f}; held-out loss {heldout_loss:.3f}", flush=True)

    if args.save:
        model.save_pretrained(args.save)
        tokenizer.save_pretrained(args.save)

    table = probe_and_print(model, tokenizer, args, languages)
    result = {"args": vars(args), "params": n_params, "train_seconds": train_seconds,
              "tokens_per_second": trained_tokens / train_seconds, "train_loss": final["train_loss"],
              "heldout_loss": heldout_loss, "accuracy": table}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1, ensure_ascii=False)
    return result


if __name__ == "__main__":
    main()
