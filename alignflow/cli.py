"""`alignflow` command line: validate, run, stages, serve, lineage, ui, eval."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from alignflow.pipeline.environment import configure_environment


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignflow", description="Declarative, tracked LLM post-training.")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check a pipeline config and list its stages")
    validate.add_argument("config")
    add_set_option(validate)

    run = commands.add_parser("run", help="run a pipeline (stages come from cache when nothing changed)")
    run.add_argument("config")
    add_set_option(run)
    run.add_argument("--only", metavar="STAGE", help="run just this stage; its upstream must be cached")
    run.add_argument("--from", dest="from_stage", metavar="STAGE", help="recompute this stage and all downstream")
    run.add_argument("--refresh", metavar="STAGE", action="append", default=[],
                     help="recompute this stage even if cached (repeatable)")

    serve = commands.add_parser(
        "serve", help="run a pipeline on a cron schedule (needs PREFECT_API_URL: a running `prefect server start`)",
        description="Register a cron deployment of the pipeline on a persistent Prefect server and run its "
                    "scheduled (or manually triggered) runs from this folder until stopped. Needs "
                    "PREFECT_API_URL pointing at `prefect server start`: the temporary server alignflow "
                    "otherwise starts per process would take the schedule with it.")
    serve.add_argument("config")
    add_set_option(serve)
    serve.add_argument("--cron", required=True, metavar="EXPR", help="cron expression, e.g. '0 3 * * *'")
    serve.add_argument("--timezone", metavar="TZ", help="IANA time zone of the cron expression (default UTC)")
    serve.add_argument("--name", help="deployment name (default: the pipeline's name)")
    serve.add_argument("--only", metavar="STAGE", help="each run: just this stage; its upstream must be cached")
    serve.add_argument("--from", dest="from_stage", metavar="STAGE", help="each run: recompute from this stage")
    serve.add_argument("--refresh", metavar="STAGE", action="append", default=[],
                       help="each run: recompute this stage even if cached (repeatable)")

    stages = commands.add_parser("stages", help="list a pipeline's stages, cache keys and cache status")
    stages.add_argument("config")
    add_set_option(stages)

    ui = commands.add_parser("ui", help="open the MLflow UI on the project's store (127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db")

    lineage = commands.add_parser("lineage", help="print the runs, datasets and models a run came from")
    lineage.add_argument("run_id", metavar="RUN_ID", help="a pipeline (parent) run or a stage run")
    lineage.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db")

    evaluate = commands.add_parser("eval", help="few-shot evaluation of any model folder, outside a pipeline")
    evaluate.add_argument("model", metavar="MODEL_DIR", help="model folder (or hub id) with its tokenizer")
    evaluate.add_argument("--task", action="append", required=True, metavar="TASK.yaml",
                          help="task file (repeatable)")
    evaluate.add_argument("--shots", default="0,1,4", help="comma-separated k values (default 0,1,4)")
    evaluate.add_argument("--selection", default="random", choices=["random", "first_n", "balanced", "similar"])
    evaluate.add_argument("--ordering", default="as_selected", choices=["as_selected", "random", "similarity"])
    evaluate.add_argument("--draw", default="per_document", choices=["per_document", "once"])
    evaluate.add_argument("--seed", type=int, default=1234, help="few-shot seed (lm-evaluation-harness: 1234)")
    evaluate.add_argument("--limit", type=int, help="score at most this many documents per task")
    evaluate.add_argument("--max-length", type=int, help="context window (default: the model's)")
    evaluate.add_argument("--add-bos", action="store_true", help="prepend BOS to every context (demo models)")
    evaluate.add_argument("--heldout-percent", type=int, default=20,
                          help="demo corpus held-out share the model was pretrained with")
    evaluate.add_argument("--embedder", default="auto", choices=["auto", "minilm", "tfidf"])
    evaluate.add_argument("--threads", type=int, help="torch threads while scoring (1 suits tiny models)")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    evaluate.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    evaluate.add_argument("--output", default="results.json", help="per-sample records and summary (JSON)")
    evaluate.add_argument("--harness-output", metavar="DIR",
                          help="also write lm-evaluation-harness's layout (results_*.json, samples_*.jsonl) here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_environment()
    from alignflow.errors import USER_ERRORS

    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as error:
        from alignflow.progress import close_open_bars

        close_open_bars()
        print(f"error: {error}", file=sys.stderr)
        return 2


def add_set_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                         help="override one config value, e.g. --set stages.dpo.beta=0.2 --set seed=1 "
                         "(read as YAML, validated as the file is; repeatable)")


def cmd_validate(args: argparse.Namespace) -> int:
    from alignflow.flows.pipeline import pipeline_graph
    from alignflow.pipeline.config import load_config
    from alignflow.pipeline.preflight import check_pipeline
    from alignflow.pipeline.runner import active_stages

    config = load_config(args.config, args.overrides)
    names = [planned.stage.name for planned in active_stages(pipeline_graph, config)]
    check_pipeline(config)
    print(f"{args.config}: valid; stages: {', '.join(names)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from alignflow.pipeline.config import load_config
    from alignflow.pipeline.prefect_server import start_prefect_api

    config = load_config(args.config, args.overrides)  # fail fast, before a Prefect server starts
    server = start_prefect_api()
    from alignflow.errors import quiet_user_errors_in_prefect_console
    from alignflow.flows.pipeline import (  # these imports overlap the server's start-up
        pipeline,
        pipeline_graph,
    )
    from alignflow.pipeline.preflight import check_pipeline
    from alignflow.pipeline.runner import plan_pipeline

    # Mistakes in the command or the config's files are one line here, before any flow run starts.
    plan_pipeline(pipeline_graph, config, only=args.only, from_stage=args.from_stage, refresh=tuple(args.refresh))
    check_pipeline(config)
    quiet_user_errors_in_prefect_console()
    if server:
        server.wait_until_ready(timeout=120)
    run = pipeline(args.config, only=args.only, from_stage=args.from_stage, refresh=tuple(args.refresh),
                   overrides=tuple(args.overrides))
    print()
    print(format_summary(run))
    return 0


def name_width(names) -> int:
    """The stage column's width: 16, or wider for a long sweep point's name (ppo-kl_coef-0.01)."""
    return max([16, *(len(name) + 2 for name in names)])


def key_width(name_column: int) -> int:
    """The cache-key column's width in `alignflow stages`: 50, or wider when the stage column is, since a
    key is its stage's name and 33 characters more (pretrain-model.num_hidden_layers-1-<32 hex>)."""
    return max(50, name_column + 33)


def format_summary(run) -> str:
    """The table a person reads at the end of a run: each stage, where it came from, its headline
    metrics, and where to look next."""
    width = name_width(report.stage for report in run)
    lines = [f"{'stage':<{width}}{'status':<10}{'seconds':>9}  {'mlflow run':<34}metrics"]
    for report in run:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in list(report.result.metrics.items())[:4])
        lines.append(f"{report.stage:<{width}}{report.status:<10}{report.seconds:>9.1f}  "
                     f"{report.result.mlflow_run_id:<34}{metrics}")
    computed = sum(report.status == "computed" for report in run)
    lines.append(f"{len(run)} stages: {computed} computed, {len(run) - computed} from cache, "
                 f"{sum(report.seconds for report in run):.1f}s")
    lines.append(f"pipeline run {run.parent_run_id}: `alignflow ui` shows it (report.html among its artifacts); "
                 f"`alignflow lineage {run.parent_run_id}` prints its lineage")
    return "\n".join(lines)


def cmd_serve(args: argparse.Namespace) -> int:
    from alignflow.pipeline.config import load_config
    from alignflow.pipeline.runner import plan_pipeline
    from alignflow.pipeline.scheduling import (
        SchedulingError,
        check_schedule,
        deployment_parameters,
        persistent_api_url,
        serve_pipeline,
        serving_message,
    )

    config = load_config(args.config, args.overrides)
    try:
        check_schedule(args.cron, args.timezone)
        api_url = persistent_api_url()
    except SchedulingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from alignflow.flows.pipeline import pipeline_graph

    plan_pipeline(pipeline_graph, config, only=args.only, from_stage=args.from_stage, refresh=tuple(args.refresh))
    name = args.name or config.name
    parameters = deployment_parameters(args.config, args.only, args.from_stage, args.refresh, args.overrides)
    print(serving_message(name, args.cron, args.timezone, parameters, api_url), flush=True)
    serve_pipeline(name, args.cron, args.timezone, parameters)
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from alignflow.flows.pipeline import pipeline_graph
    from alignflow.pipeline.config import load_config
    from alignflow.pipeline.runner import lookup, plan_pipeline, stage_key

    config = load_config(args.config, args.overrides)
    results: dict = {}
    plan = plan_pipeline(pipeline_graph, config)
    width = name_width(plan)
    keys = key_width(width)
    print(f"{'stage':<{width}}{'status':<12}{'cache key':<{keys}}detail")
    for planned in plan.values():
        stage = planned.stage
        if not all(upstream in results for upstream in planned.inputs):
            print(f"{stage.name:<{width}}{'pending':<12}{'-':<{keys}}upstream not cached yet")
            continue
        key = stage_key(stage, planned.section, config, {upstream: results[upstream] for upstream in planned.inputs})
        cached, problem = lookup(config, key)
        if cached:
            results[stage.name] = cached
            print(f"{stage.name:<{width}}{'cached':<12}{key:<{keys}}run {cached.mlflow_run_id}")
        else:
            print(f"{stage.name:<{width}}{'will run':<12}{key:<{keys}}{problem}")
    return 0


def store_uri(given: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the project's SQLite store (as `run` uses;
    alignflow.tracking.runs has the same default but importing it costs mlflow's import)."""
    return given or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlruns').resolve() / 'mlflow.db'}"


def cmd_ui(args: argparse.Namespace) -> int:
    uri = store_uri(args.tracking_uri)
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


def cmd_lineage(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from alignflow.tracking.lineage import LineageError, build_lineage, format_lineage

    uri = store_uri(args.tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        print(f"error: run {args.run_id}: no MLflow store at {uri}", file=sys.stderr)
        return 2
    try:
        print(format_lineage(build_lineage(MlflowClient(tracking_uri=uri), args.run_id)))
    except LineageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from alignflow.evaluation.sweep import (
        SweepSettings,
        evaluate_model,
        format_summary,
        load_model,
        load_tasks,
    )

    try:
        shots = tuple(int(k) for k in args.shots.split(","))
    except ValueError:
        print(f"error: --shots {args.shots!r}: give comma-separated whole numbers, e.g. 0,1,4", file=sys.stderr)
        return 2
    tasks = load_tasks(args.task, heldout_percent=args.heldout_percent, limit=args.limit)  # TaskSpecError: one line
    settings = SweepSettings(shots=shots, selection=args.selection, ordering=args.ordering, draw=args.draw,
                             seed=args.seed, limit=args.limit, max_length=args.max_length, add_bos=args.add_bos,
                             embedder=args.embedder, heldout_percent=args.heldout_percent,
                             threads=args.threads)
    from alignflow.models.loading import resolve_placement

    model, tokenizer = load_model(args.model, resolve_placement(args.device, args.dtype))
    result = evaluate_model(model, tokenizer, tasks, settings, on_progress=lambda line: print(line, flush=True))
    report = {"model": args.model, "settings": asdict(settings), "embedder": result.embedder,
              "seconds": result.seconds, "summary": result.rows, "samples": result.records}
    Path(args.output).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    print(format_summary(result.rows))
    print(f"{len(result.records)} per-sample records in {args.output} ({result.seconds:.1f}s)")
    if args.harness_output:
        from alignflow.evaluation.harness_layout import write_harness_layout

        written = write_harness_layout(Path(args.harness_output), result.records,
                                       {t.spec.name: t.spec for t in tasks}, {t.spec.name: t.path for t in tasks},
                                       model_name=args.model, limit=args.limit, fewshot_seed=args.seed)
        print(f"lm-evaluation-harness layout: {written[0]} and {len(written) - 1} samples files")
    return 0


COMMANDS = {"validate": cmd_validate, "run": cmd_run, "stages": cmd_stages, "ui": cmd_ui, "eval": cmd_eval,
            "serve": cmd_serve, "lineage": cmd_lineage}

if __name__ == "__main__":
    raise SystemExit(main())
