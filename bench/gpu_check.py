"""The smoke pipeline on a GPU with a Qwen2-shaped random model of about 0.5B parameters, in bfloat16.

Asserts that every model of every stage was on the GPU (the `model.<role>.device` params each stage
logs), then prints what one run measured: SFT tokens/s and model FLOPs utilisation (6 * N * tokens/s
over the GPU's dense bf16 peak), PPO rollout tokens/s, evaluation documents/s. Run through
bench/gpu_check.sh on the device machine; `--size tiny --device cpu --dtype float32` checks the
script itself on a laptop in a minute.

Usage: python bench/gpu_check.py [--size qwen-0.5b|tiny] [--device cuda] [--dtype bfloat16] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# Dense bf16 peak of an H100/H200 SXM (NVIDIA's datasheet, without sparsity).
PEAK_BF16_FLOPS = 989.4e12
SIZES = {
    # Qwen2-0.5B's widths; 32 layers instead of 24 make up for the small vocabulary a tokenizer trained
    # on the demo data has (Qwen's own has 151k entries), to land near 0.5B parameters.
    "qwen-0.5b": dict(vocab_size=8000, hidden_size=896, intermediate_size=4864, num_layers=32, num_heads=14,
                      num_kv_heads=2, max_positions=1024),
    "tiny": dict(vocab_size=600, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                 max_positions=256),
}


def pipeline_config(model_dir: Path, device: str, dtype: str, big: bool) -> dict:
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text(encoding="utf-8"))["stages"]
    steps = 40 if big else 2
    stages = {name: smoke[name] for name in ("build", "clean", "validate")}
    stages["build"]["demo_families"] = {"families": ["add", "reverse"], "per_family": 64 if big else 12}
    stages |= {
        "sft": {"method": "full", "max_steps": steps, "batch_size": 16, "max_length": 256, "logging_steps": 5 if big else 1,
                "eval_steps": steps, "save_steps": steps, "learning_rate": 2e-5},
        "preferences": {"tasks": ["add", "reverse"], "num_samples": 4, "max_new_tokens": 16, "max_prompts": 64,
                        "eval_prompts": 16, "heldout_fraction": 0.25, "batch_size": 64},
        "reward_model": {"max_steps": steps // 2 or 1, "batch_size": 16, "logging_steps": 5, "eval_steps": 10},
        "dpo": {"max_steps": steps // 2 or 1, "batch_size": 8, "logging_steps": 5, "eval_steps": 10},
        "ppo": {"max_steps": 4 if big else 1, "batch_size": 32, "mini_batch_size": 16, "max_new_tokens": 32,
                "save_steps": 100, "sample_every": 100},
        "grpo": {"max_steps": 2 if big else 1, "batch_size": 16, "num_generations": 4, "max_completion_length": 16},
        "rloo": {"max_steps": 2 if big else 1, "batch_size": 16, "num_generations": 4, "max_completion_length": 16},
        "evaluate": {**smoke["evaluate"], "shots": [0, 1, 4], "limit": 64 if big else 2, "add_bos": False,
                     "threads": None},
    }
    return {"name": "gpu-check", "seed": 0, "base_model": str(model_dir),
            "execution": {"device": device, "dtype": dtype}, "stages": stages}


def stage_runs(folder: Path) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("gpu-check")
    runs = client.search_runs([experiment.experiment_id])
    return {r.data.tags["alignflow.pipeline.stage"]: r for r in runs if "alignflow.pipeline.stage" in r.data.tags}, client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="qwen-0.5b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="where results.json goes (default $OUT)")
    parser.add_argument("--ddp", type=int, default=None,
                        help="also run SFT as a DDP job of this many processes (default: every GPU when there "
                        "are several, else none)")
    args = parser.parse_args()

    from alignflow.cli import main as alignflow
    from alignflow.demo.foreign import build_foreign_model, corpus_texts

    folder = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    for part in ("configs", "data"):
        shutil.copytree(REPO / part, folder / part)
    started = time.perf_counter()
    model_dir = build_foreign_model("qwen2_chatml", folder / "model", corpus_texts(folder / "data"), **SIZES[args.size])
    config = pipeline_config(model_dir, args.device, args.dtype, args.size != "tiny")
    (folder / "gpu.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    print(f"[gpu_check] model built in {time.perf_counter() - started:.0f}s; running the pipeline in {folder}",
          flush=True)
    os.chdir(folder)
    code = alignflow(["run", "gpu.yaml"])
    if code != 0:
        print(f"[gpu_check] FAILED: alignflow run exited {code}", flush=True)
        return code

    runs, client = stage_runs(folder)
    wrong = {stage: {k: v for k, v in run.data.params.items() if k.startswith("model.") and k.endswith(".device")
                     and not v.startswith(args.device)}
             for stage, run in runs.items()}
    missing = [s for s in ("sft", "preferences", "reward_model", "dpo", "ppo", "grpo", "rloo", "evaluate")
               if not any(k.startswith("model.") for k in runs[s].data.params)]
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as weights:
        n_params = sum(_numel(weights.get_slice(k).get_shape()) for k in weights.keys())  # noqa: SIM118

    def history(stage: str, key: str) -> list[float]:
        return [m.value for m in client.get_metric_history(runs[stage].info.run_id, key)]

    sft_rates = history("sft", "tokens_per_second")[1:] or history("sft", "tokens_per_second")
    sft_tps = statistics.median(sft_rates) if sft_rates else float("nan")
    rollout = history("ppo", "rollout_tokens_per_second")
    evaluation = runs["evaluate"].data.metrics
    results = {
        "device": args.device, "dtype": args.dtype, "size": args.size, "parameters": n_params,
        "sft_tokens_per_second": sft_tps,
        "sft_mfu": 6 * n_params * sft_tps / PEAK_BF16_FLOPS if args.device.startswith("cuda") else None,
        "ppo_rollout_tokens_per_second": statistics.median(rollout) if rollout else float("nan"),
        "eval_docs_per_second": evaluation["documents_scored"] / max(evaluation["eval_seconds"], 1e-9),
        "stage_seconds": {s: r.data.metrics.get("stage_seconds") for s, r in runs.items()},
        "stages_off_device": {s: v for s, v in wrong.items() if v}, "stages_without_models": missing,
        "wall_seconds": time.perf_counter() - started,
    }
    print(json.dumps(results, indent=1), flush=True)
    results["scaling"] = ddp_scaling(args, config, sft_tps, n_params)
    print(json.dumps({"scaling": results["scaling"]}, indent=1), flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_check.json").write_text(json.dumps(results, indent=1))
    ok = not results["stages_off_device"] and not missing
    print(f"[gpu_check] {'OK: every stage ran on ' + args.device if ok else 'FAILED: see stages_off_device'}")
    return 0 if ok else 1


def ddp_scaling(args, config: dict, single_tps: float, n_params: int) -> dict:
    """SFT again as a launched job over every GPU, with DDP and with FSDP2 (accelerate's own config,
    configs/accelerate/fsdp_8gpu.yaml resized), at the same per-process batch: tokens/s per process
    and the scaling efficiency against the single-process run (1.0 = linear)."""
    import torch

    processes = args.ddp if args.ddp is not None else (torch.cuda.device_count() if args.device.startswith("cuda")
                                                        else 0)
    if processes < 2:
        return {"skipped": f"{processes or 1} device(s): DDP/FSDP scaling not measured"}
    fsdp = yaml.safe_load((REPO / "configs" / "accelerate" / "fsdp_8gpu.yaml").read_text(encoding="utf-8"))
    fsdp["num_processes"] = processes
    Path("fsdp.yaml").write_text(yaml.safe_dump(fsdp), encoding="utf-8")
    return {kind: launched_sft(args, config, single_tps, n_params, processes, extra)
            for kind, extra in (("ddp", {}), ("fsdp", {"accelerate_config": "fsdp.yaml"}))}


def launched_sft(args, config: dict, single_tps: float, n_params: int, processes: int, extra: dict) -> dict:
    from alignflow.cli import main as alignflow

    launched = json.loads(json.dumps(config))
    launched["execution"] |= {"launcher": "accelerate", "num_processes": processes, **extra}
    name = "fsdp-run.yaml" if extra else "ddp-run.yaml"
    Path(name).write_text(yaml.safe_dump(launched, allow_unicode=True), encoding="utf-8")
    if alignflow(["run", name, "--only", "sft"]) != 0:
        return {"failed": f"the launched SFT run ({name}) failed (output above)"}
    runs, client = stage_runs(Path.cwd())
    latest = max((r for r in client.search_runs([client.get_experiment_by_name("gpu-check").experiment_id])
                  if r.data.tags.get("alignflow.pipeline.stage") == "sft"), key=lambda r: r.info.start_time)
    rates = [m.value for m in client.get_metric_history(latest.info.run_id, "tokens_per_second")][1:]
    total = statistics.median(rates) if rates else float("nan")  # rank 0 sees the gathered token count
    return {"processes": processes, "tokens_per_second": total, "tokens_per_second_per_process": total / processes,
            "scaling_efficiency": total / (processes * single_tps) if single_tps else None,
            "mfu": 6 * n_params * total / (processes * PEAK_BF16_FLOPS) if args.device.startswith("cuda") else None}


def _numel(shape) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


if __name__ == "__main__":
    sys.exit(main())
