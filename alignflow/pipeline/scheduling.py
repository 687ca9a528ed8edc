"""Scheduled pipeline runs: `alignflow serve` keeps a process that registers a cron deployment
on a Prefect server and runs what that server schedules (Prefect's `flow.serve`).

Work-pool deployments (runs on workers, no long-lived alignflow process) are declared in
`prefect.yaml` instead; see the README's "Scheduling".
"""

from __future__ import annotations

import contextlib

FLOW_NAME = "alignflow-pipeline"  # the @flow name in flows/pipeline.py


class SchedulingError(ValueError):
    """A schedule cannot be served as asked (no persistent Prefect API, bad cron expression)."""


def check_schedule(cron: str, timezone: str | None) -> None:
    """Reject a bad cron expression or time zone before anything is registered."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as error:
        problems = "; ".join(item["msg"].removeprefix("Value error, ") for item in error.errors())
        raise SchedulingError(f"--cron {cron!r}{f' --timezone {timezone!r}' if timezone else ''}: {problems} "
                              "(five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *')"
                              ) from None


def persistent_api_url() -> str:
    """The Prefect API the deployment will live on.

    Without `PREFECT_API_URL` Prefect starts a temporary server inside this process: the
    deployment, its schedule and its run history would vanish when the process stops, and
    nothing else (a UI, `prefect deployment run`) could reach them.
    """
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise SchedulingError(
            "serve needs a persistent Prefect server: start one with `prefect server start` "
            "(in another terminal) and set PREFECT_API_URL=http://127.0.0.1:4200/api; without it "
            "the temporary server alignflow starts per process would take the schedule with it")
    _check_reachable(url)
    return url


def _check_reachable(url: str) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise SchedulingError(f"no Prefect API answers at PREFECT_API_URL={url} ({problem}); "
                              "is `prefect server start` running?")


def deployment_parameters(config_path: str, only: str | None, from_stage: str | None,
                          refresh: list[str], overrides: list[str] | None = None) -> dict:
    """The flow's parameters for every scheduled run; unset options are left to the flow's defaults."""
    parameters: dict = {"config_path": config_path}
    if overrides:
        parameters["overrides"] = list(overrides)
    if only:
        parameters["only"] = only
    if from_stage:
        parameters["from_stage"] = from_stage
    if refresh:
        parameters["refresh"] = list(refresh)
    return parameters


def serving_message(name: str, cron: str, timezone: str | None, parameters: dict, api_url: str) -> str:
    """What a person needs to know once the deployment is served."""
    full_name = f"{FLOW_NAME}/{name}"
    return "\n".join([
        f"serving deployment '{full_name}' on {api_url}",
        f"  schedule:   cron '{cron}' ({timezone or 'UTC'})",
        f"  parameters: {parameters}",
        "  runs execute in this process's folder, one at a time; Ctrl-C stops serving and pauses the schedule",
        f"  run it now: prefect deployment run '{full_name}'",
    ])


def serve_pipeline(name: str, cron: str, timezone: str | None, parameters: dict) -> None:
    """Register the deployment and run what the server schedules until interrupted (blocks)."""
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    from alignflow.flows.pipeline import pipeline

    # A module entrypoint works from any project folder, wherever alignflow is installed; one
    # pipeline run at a time, since runs of one project share its artifact and cache folders.
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a person stops serving
        pipeline.serve(name=name, schedule=Cron(cron, timezone=timezone), parameters=parameters, limit=1,
                       print_starting_message=False, entrypoint_type=EntrypointType.MODULE_PATH)
