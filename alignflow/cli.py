"""`alignflow` command line: validate, run, stages, ui."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from alignflow.environment import configure_environment


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignflow", description="Declarative, tracked LLM post-training.")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check a pipeline config and list its stages")
    validate.add_argument("config")

    run = commands.add_parser("run", help="run a pipeline (stages come from cache when nothing changed)")
    run.add_argument("config")
    run.add_argument("--only", metavar="STAGE", help="run just this stage; its upstream must be cached")
    run.add_argument("--from", dest="from_stage", metavar="STAGE", help="recompute this stage and all downstream")
    run.add_argument("--refresh", metavar="STAGE", action="append", default=[],
                     help="recompute this stage even if cached (repeatable)")

    stages = commands.add_parser("stages", help="list a pipeline's stages, cache keys and cache status")
    stages.add_argument("config")

    ui = commands.add_parser("ui", help="open the MLflow UI on the project's store (127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_environment()
    from alignflow.config import ConfigError
    from alignflow.runner import PipelineError

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, PipelineError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def cmd_validate(args: argparse.Namespace) -> int:
    from alignflow.config import load_config
    from alignflow.runner import active_stages
    from alignflow.tasks import PIPELINE

    config = load_config(args.config)
    names = [stage.name for stage, _ in active_stages(PIPELINE, config)]
    print(f"{args.config}: valid; stages: {', '.join(names)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from alignflow.config import load_config
    from alignflow.flows.pipeline import pipeline

    load_config(args.config)  # fail fast, before a Prefect server starts
    reports = pipeline(args.config, only=args.only, from_stage=args.from_stage, refresh=tuple(args.refresh))
    print()
    print(f"{'stage':<16}{'status':<10}{'seconds':>9}  {'mlflow run':<34}metrics")
    for report in reports:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in list(report.result["metrics"].items())[:4])
        print(f"{report.stage:<16}{report.status:<10}{report.seconds:>9.1f}  "
              f"{report.result['mlflow_run_id']:<34}{metrics}")
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from alignflow.config import load_config
    from alignflow.runner import active_stages, lookup, stage_key
    from alignflow.tasks import PIPELINE

    config = load_config(args.config)
    results: dict[str, dict] = {}
    active = active_stages(PIPELINE, config)
    names = {stage.name for stage, _ in active}
    print(f"{'stage':<16}{'status':<12}{'cache key':<50}detail")
    for stage, _ in active:
        inputs = stage.inputs(names)
        if not all(name in results for name in inputs):
            print(f"{stage.name:<16}{'pending':<12}{'-':<50}upstream not cached yet")
            continue
        key = stage_key(stage, config, {name: results[name] for name in inputs})
        cached, problem = lookup(config, key)
        if cached:
            results[stage.name] = cached
            print(f"{stage.name:<16}{'cached':<12}{key:<50}run {cached['mlflow_run_id']}")
        else:
            print(f"{stage.name:<16}{'will run':<12}{key:<50}{problem}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{Path('mlruns').resolve() / 'mlflow.db'}"
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
               "--port", str(args.port), "--workers", "1"]
    if uri.startswith("sqlite:"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        command += ["--default-artifact-root", (Path("mlruns") / "artifacts").resolve().as_uri()]
    print(f"MLflow UI on http://127.0.0.1:{args.port} (store {uri}); Ctrl-C stops it", flush=True)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0


COMMANDS = {"validate": cmd_validate, "run": cmd_run, "stages": cmd_stages, "ui": cmd_ui}

if __name__ == "__main__":
    raise SystemExit(main())
