"""Errors the command line reports as `error: ...` (exit 2) rather than a traceback; kept apart
from the runner so that catching them imports nothing heavy."""

from __future__ import annotations


class PipelineError(RuntimeError):
    """A run cannot proceed as asked (unknown stage, missing cached upstream, ...)."""


class ConfigError(ValueError):
    """A config file could not be read or did not validate; the message lists every problem."""


class DataError(ValueError):
    """Input data a stage cannot use (a missing or empty file, a table that does not fit its schema,
    too many rejected rows). The message names the file and, where one is to blame, the row and
    column. A ValueError, so that callers of the pure functions can catch it as one."""


class ModelLoadError(ValueError):
    """A model or tokenizer could not be loaded (no such folder, no weights, corrupt weights, not a
    causal LM, a hub id that cannot be reached); the message names the model and the cause."""


class NonFiniteLoss(RuntimeError):
    """Training diverged: the loss (or a trained model's scores) became NaN or infinite. The run
    stops before saving anything after it; the message says where and what to change (learning
    rate, clipping, dtype, data)."""


# What `alignflow` reports as one line: the user can fix these without reading a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, PipelineError, DataError, ModelLoadError, NonFiniteLoss)


class _UserErrorConsoleFilter:
    """Keeps Prefect's console lines about a failed task or flow run out of the terminal when the
    failure is a user error: the command prints that error as one line, and Prefect's lines would
    repeat it with a traceback. The records still reach Prefect's API (its UI shows the failure)."""

    names = tuple(cls.__name__ for cls in USER_ERRORS) + ("TaskSpecError",)

    def filter(self, record) -> bool:
        if not record.name.startswith(("prefect.task_runs", "prefect.flow_runs")):
            return True
        if record.exc_info and isinstance(record.exc_info[1], USER_ERRORS):
            return False
        message = record.getMessage()
        return not any(f"{name}(" in message or f"{name}:" in message for name in self.names)


def quiet_user_errors_in_prefect_console() -> None:
    """Install the filter on the console handlers Prefect configured (call after importing prefect)."""
    import logging

    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler" and not any(
                isinstance(f, _UserErrorConsoleFilter) for f in handler.filters):
            handler.addFilter(_UserErrorConsoleFilter())
