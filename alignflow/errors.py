"""Errors the command line reports as `error: ...` (exit 2) rather than a traceback; kept apart
from the runner so that catching them imports nothing heavy."""

from __future__ import annotations


class PipelineError(RuntimeError):
    """A run cannot proceed as asked (unknown stage, missing cached upstream, ...)."""
