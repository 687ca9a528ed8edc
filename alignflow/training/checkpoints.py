"""Checkpoints that survive a killed process, shared by every training stage.

They live outside the stage folder (`.alignflow/checkpoints/<stage>/<cache key>/`), because the
runner empties the stage folder before each attempt; the same cache key finds them again on a
rerun. A finished stage deletes them.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from alignflow.distributed import is_main_process
from alignflow.schemas.config import PipelineConfig
from alignflow.tracking import runs as tracking


def checkpoint_dir(config: PipelineConfig, stage: str, out_dir: Path) -> Path:
    return Path(config.cache.dir).resolve().parent / "checkpoints" / stage / out_dir.name


def resume_point(checkpoints: Path) -> tuple[Path | None, int]:
    """(newest complete `checkpoint-N` folder, N), or (None, 0).

    The trainer writes trainer_state.json last, so a folder without it was cut off mid-save (the
    process was killed): it is deleted rather than resumed from.
    """
    found = []
    for folder in checkpoints.glob("checkpoint-*"):
        if not (match := re.fullmatch(r"checkpoint-(\d+)", folder.name)):
            continue
        if (folder / "trainer_state.json").is_file():
            found.append((int(match.group(1)), folder))
        else:
            shutil.rmtree(folder, ignore_errors=True)
    if not found:
        return None, 0
    step, folder = max(found)
    return folder, step


def carry_over_metrics(checkpoints: Path, run_id: str, step: int) -> None:
    """On resume, copy the interrupted run's curve up to the checkpoint step into this run (one
    value per step in the run the pipeline points at), mark that run as killed, and remember this
    run as the one a later resume copies from."""
    if not is_main_process():
        return  # the main process's run is the stage's; the others log into scratch stores
    marker = checkpoints / "mlflow_run_id"
    if step and marker.is_file():
        interrupted = marker.read_text().strip()
        tracking.copy_metric_history(interrupted, run_id, step)
        tracking.mark_interrupted(interrupted)
    checkpoints.mkdir(parents=True, exist_ok=True)
    marker.write_text(run_id)


def remove_checkpoints(checkpoints: Path) -> None:
    """A finished stage's checkpoints go (a later forced rerun starts afresh); in a launched job only
    the main process deletes, after the others are done with them."""
    if is_main_process():
        shutil.rmtree(checkpoints, ignore_errors=True)
