"""Which process of a launched (accelerate / torchrun) job this is. Outside a launched job every
process is the main one, so the stages' code reads the same either way."""

from __future__ import annotations

import os


def rank() -> int:
    """Global rank under torchrun or accelerate (RANK); 0 in a plain process."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's index on its machine (LOCAL_RANK): the GPU a launched rank owns."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """The one process that writes MLflow, the model folder, checkpoint metadata and progress bars."""
    return rank() == 0


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (PR_SET_PDEATHSIG), so that a killed
    `alignflow run` takes its launched job with it: torchrun starts each worker in a session of its
    own, where a signal to the run's process group never reaches it, and an orphaned worker would
    go on training into the checkpoints a rerun resumes from. No-op elsewhere."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)
