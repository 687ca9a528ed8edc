"""Cold vs cached wall time of `alignflow run CONFIG`, side by side in one go, and the peak memory
of the cold run.

Each run is a new process in a fresh project folder (as a user runs it), so both include
Python start-up and Prefect's temporary server. Usage:
    python bench/cache_smoke.py [--repeats 3]                             # the smoke pipeline
    python bench/cache_smoke.py --config configs/demo.yaml --repeats 1    # the full demo (~10 min)
Peak memory is the largest resident set of any process the run started (getrusage of children).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed_run(folder: Path, config: str) -> float:
    """Seconds one `alignflow run` takes, start-up included."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "alignflow.cli", "run", config], cwd=folder, capture_output=True,
                          text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if done.returncode:
        raise SystemExit(f"alignflow run failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default="configs/smoke.yaml")
    args = parser.parse_args()
    cold, cached = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            shutil.copytree(REPO / "configs", folder / "configs")
            shutil.copytree(REPO / "data", folder / "data")
            cold.append(timed_run(folder, args.config))
            cached.append(timed_run(folder, args.config))
    print(f"config: {args.config}, repeats: {args.repeats} (pairs run back to back)")
    print(f"cold   median {statistics.median(cold):6.1f} s   runs {', '.join(f'{t:.1f}' for t in cold)}")
    print(f"cached median {statistics.median(cached):6.1f} s   runs {', '.join(f'{t:.1f}' for t in cached)}")
    print(f"cached / cold = {statistics.median(cached) / statistics.median(cold):.3f}")
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
    print(f"peak memory of one process: {peak_gib:.2f} GiB")


if __name__ == "__main__":
    main()
