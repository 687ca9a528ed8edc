"""Wall time of reward_model + dpo recomputed in sequence vs side by side (`execution.parallel_stages`).

One project folder: a cold run fills the cache (smoke pipeline + preferences, reward_model, dpo),
then the two stages are recomputed (`--refresh`) with parallel_stages 1 and 2, alternating, each a
new `alignflow run` process. Usage: python bench/parallel_stages.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = {
    "preferences": {"tasks": ["add", "reverse"], "num_samples": 4, "max_new_tokens": 8, "eval_prompts": 8},
    "reward_model": {"max_steps": 60, "batch_size": 8, "logging_steps": 10, "eval_steps": 30},
    "dpo": {"max_steps": 60, "batch_size": 8, "logging_steps": 10, "eval_steps": 30, "win_rate_max_new_tokens": 6},
}


def write_config(folder: Path, parallel: int) -> str:
    config = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text(encoding="utf-8"))
    config["stages"]["build"]["demo_families"] = {"families": ["add", "reverse"], "per_family": 12}
    del config["stages"]["evaluate"]
    config["stages"].update(STAGES)
    config["execution"] = {"parallel_stages": parallel}
    path = folder / "configs" / f"parallel-{parallel}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return str(path.relative_to(folder))


def timed_run(folder: Path, args: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "alignflow.cli", "run", *args], cwd=folder, capture_output=True,
                          text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if done.returncode:
        raise SystemExit(f"alignflow run failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copytree(REPO / "configs", folder / "configs")
        shutil.copytree(REPO / "data", folder / "data")
        configs = {n: write_config(folder, n) for n in (1, 2)}
        print(f"cold run (fills the cache): {timed_run(folder, [configs[1]]):.1f} s")
        times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.repeats):
            for n in (1, 2):
                times[n].append(timed_run(folder, [configs[n], "--refresh", "reward_model", "--refresh", "dpo"]))
    for n, values in times.items():
        print(f"parallel_stages={n}: median {statistics.median(values):.1f} s  runs "
              f"{', '.join(f'{t:.1f}' for t in values)}")
    print(f"side by side / in sequence = {statistics.median(times[2]) / statistics.median(times[1]):.2f}")


if __name__ == "__main__":
    main()
