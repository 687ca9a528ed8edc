"""alignflow's SFT training path vs a bare TRL SFTTrainer script: tokens per second, side by side.

Both train the same model (a fresh demo-size Llama and BPE tokenizer, or --model DIR) on the same
tokenised instruction rows (the demo's family rows through alignflow's loss masks) for the same
steps, batch and learning rate, one thread, alternating A/B over --repeats rounds so machine
noise hits both. "alignflow" is what the stage runs: AlignflowSFTTrainer (finite-loss guard),
the MLflow metric callback (into a throwaway SQLite store), the progress bar, tokens-seen
counting and, with --mixing, the fixed mixed stream. "bare" is SFTTrainer with report_to=none;
"bare+mlflow" is the same script with transformers' own MLflow callback (report_to=mlflow), the
fair baseline for a tracked run. Metrics are logged every --logging-steps steps in all three.

Usage: python bench/sft_overhead.py [--steps 60] [--repeats 3] [--logging-steps 5] [--model DIR] [--mixing]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
from transformers.utils import logging as transformers_logging
from trl import SFTConfig, SFTTrainer

from alignflow.data.families import FIELD_LABELS, build_families
from alignflow.data.instructions import demo_family_rows
from alignflow.demo.model import build_llama
from alignflow.demo.tokenizer import train_tokenizer
from alignflow.schemas.stages.sft import MixingConfig, SFTStageConfig
from alignflow.tasks.sft import trainer_arguments, training_stream
from alignflow.training.callbacks import MlflowMetrics, ProgressBar
from alignflow.training.sft_data import PromptTemplate, tokenize_table
from alignflow.training.sft_trainer import AlignflowSFTTrainer


def model_and_tokenizer(path: str | None, rows: list[dict]):
    if path:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)
    texts = [f"{FIELD_LABELS['zh']['input']}{r['input']}\n{r['instruction']}{r['output']}" for r in rows]
    tokenizer = train_tokenizer(texts * 3, 1024)
    model = build_llama(tokenizer, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, dropout=0.0, seed=0)
    return model, tokenizer


def count_tokens(dataset: Dataset, steps: int, batch: int) -> int:
    lengths = [len(ids) for ids in dataset["input_ids"]]
    total = steps * batch
    return sum(lengths[i % len(lengths)] for i in range(total))


def run_bare(model_dir: Path, tokenizer, examples: list[dict], settings: SFTStageConfig, out: Path,
             report_to: str = "none") -> float:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = SFTConfig(output_dir=str(out), max_steps=settings.max_steps,
                     per_device_train_batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                     lr_scheduler_type="cosine", warmup_steps=settings.warmup_steps, max_length=settings.max_length,
                     logging_steps=settings.logging_steps, save_strategy="no", use_cpu=True, bf16=False,
                     activation_checkpointing=False, report_to=report_to, disable_tqdm=True, seed=0)
    if report_to == "mlflow":
        mlflow.set_tracking_uri(f"sqlite:///{out}.db")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples), processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    if report_to == "mlflow":
        mlflow.end_run()
    return seconds


def run_alignflow(model_dir: Path, tokenizer, examples: list[dict], origins: list[dict], settings: SFTStageConfig,
                  out: Path) -> float:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    train = examples
    if settings.mixing is not None:
        stream, _ = training_stream(origins, settings, seed=0)
        train = [examples[i] for i in stream]
    args = trainer_arguments(settings, out, 0, has_validation=False)
    args.save_strategy = "no"
    mlflow.set_tracking_uri(f"sqlite:///{out}/mlflow.db")
    with mlflow.start_run():
        trainer = AlignflowSFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train),
                                      processing_class=tokenizer, callbacks=[MlflowMetrics(), ProgressBar("sft")])
        trainer.remove_callback(PrinterCallback)
        started = time.perf_counter()
        trainer.train()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None)
    parser.add_argument("--mixing", action="store_true")
    parser.add_argument("--logging-steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    transformers_logging.disable_progress_bar()
    rows = demo_family_rows(sorted(build_families()), 40, "zh", 20, 0)
    model, tokenizer = model_and_tokenizer(args.model, rows)
    import pandas as pd

    examples, origins, _ = tokenize_table(pd.DataFrame(rows), tokenizer, PromptTemplate(), 256)
    settings = SFTStageConfig(max_steps=args.steps, batch_size=8, logging_steps=args.logging_steps, warmup_steps=5, max_length=256,
                              mixing=MixingConfig(cap=30) if args.mixing else None)
    tokens = count_tokens(Dataset.from_list(examples), args.steps, 8)
    times: dict[str, list[float]] = {"bare": [], "bare+mlflow": [], "alignflow": []}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model.save_pretrained(model_dir)
        for round_ in range(args.repeats):
            names = list(times) if round_ % 2 == 0 else list(times)[::-1]
            for name in names:
                out = Path(tmp) / f"{name}-{round_}".replace("+", "-")
                if name.startswith("bare"):
                    report_to = "mlflow" if name == "bare+mlflow" else "none"
                    times[name].append(run_bare(model_dir, tokenizer, examples, settings, out, report_to))
                else:
                    times[name].append(run_alignflow(model_dir, tokenizer, examples, origins, settings, out))
    rate = {name: tokens / statistics.median(values) for name, values in times.items()}
    print(f"steps {args.steps} x batch 8, ~{tokens} tokens per run, logged every {args.logging_steps} steps, "
          f"{args.repeats} alternating rounds, 1 thread")
    for name, values in times.items():
        print(f"{name:12s} median {statistics.median(values):6.2f} s  ({', '.join(f'{v:.2f}' for v in values)})  "
              f"~{rate[name]:8.0f} tokens/s")
    print(f"ratio alignflow / bare tokens/s: {rate['alignflow'] / rate['bare']:.3f} (target >= 0.95)")
    print(f"ratio alignflow / bare+mlflow tokens/s: {rate['alignflow'] / rate['bare+mlflow']:.3f}")


if __name__ == "__main__":
    main()
