"""Preference sampling inline vs fanned out over Prefect task runners (thread, process, local Dask),
side by side in one go, on a random Qwen2-shaped model; every runner's samples are checked equal to
the inline ones. Usage:
    python bench/fanout.py [--prompts 64] [--samples 4] [--new-tokens 16] [--workers 2] [--hidden 128]
Each fanned-out shard loads the model in its worker: the figures include that cost.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    from alignflow.pipeline.environment import configure_environment

    folder = Path(tempfile.mkdtemp(prefix="alignflow-fanout-"))
    configure_environment(folder)
    from alignflow.pipeline.prefect_server import start_prefect_api

    server = start_prefect_api()  # the CLI's temporary Prefect server, before prefect is imported
    if server is not None:
        server.wait_until_ready(120)
    from alignflow.demo.foreign import build_foreign_model, corpus_texts
    from alignflow.pipeline.fanout import batch_shards, fan_out
    from alignflow.schemas.config import ExecutionConfig
    from alignflow.tasks.preferences import sample_shard

    repo = Path(__file__).resolve().parents[1]
    model = build_foreign_model("qwen2_chatml", folder / "model", corpus_texts(repo / "data"),
                                hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_layers=2)
    prompts = [f"<|im_start|>user\n{a} + {b} = ?<|im_end|>\n<|im_start|>assistant\n"
               for a, b in zip(range(args.prompts), range(3, 3 + args.prompts), strict=True)]
    settings = {"num_samples": args.samples, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": args.new_tokens,
                "batch_size": args.batch}
    results, seconds = {}, {}
    for runner in ("inline", "thread", "process", "dask"):
        execution = ExecutionConfig(task_runner=runner, data_workers=args.workers)
        workers = 1 if runner == "inline" else args.workers
        shards = [{"policy_path": str(model), "device": "cpu", "dtype": "float32", "prompts": prompts[a:b],
                   "first_index": a, "seed": 0, "settings": settings}
                  for a, b in batch_shards(len(prompts), args.batch, workers)]
        started = time.perf_counter()
        sampled = [r for shard in fan_out(execution, sample_shard, shards) for r in shard]
        seconds[runner] = time.perf_counter() - started
        print(f"[fanout] {runner}: {seconds[runner]:.1f} s", flush=True)
        results[runner] = [[x.text for x in responses] for responses in sampled]
    same = {runner: results[runner] == results["inline"] for runner in results}
    print(json.dumps({"prompts": args.prompts, "samples": args.samples, "workers": args.workers,
                      "seconds": {k: round(v, 2) for k, v in seconds.items()},
                      "ratio_to_inline": {k: round(v / seconds["inline"], 2) for k, v in seconds.items()},
                      "rows_equal_inline": same}, indent=1))


if __name__ == "__main__":
    main()
