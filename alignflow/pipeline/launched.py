"""One process of a launched stage job: `python -m alignflow.pipeline.launched REQUEST.json` under torchrun or
accelerate (see alignflow.pipeline.launcher). Every rank imports the stage by its module and name and runs
its function on the same request, so the trainers see one distributed job; rank 0 logs into the
stage's MLflow run and writes the stage folder, the other ranks write into a scratch folder and a
scratch MLflow store of the job."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from alignflow.pipeline.environment import configure_environment


def main(request_file: str) -> int:
    from alignflow.distributed import die_with_parent

    die_with_parent()
    configure_environment()
    import mlflow

    from alignflow.distributed import rank
    from alignflow.pipeline.launcher import load_typed
    from alignflow.pipeline.runner import call_stage
    from alignflow.pipeline.stage import import_stage
    from alignflow.schemas.config import PipelineConfig
    from alignflow.tracking import runs as tracking

    request = json.loads(Path(request_file).read_text())
    job = Path(request["job"])
    stage = import_stage(*request["stage"])
    config = PipelineConfig.model_validate(request["config"])
    section = load_typed(*request["section"])
    inputs = {name: load_typed(*typed) for name, typed in request["inputs"].items()}
    out_dir = Path(request["out_dir"])
    me = rank()
    if me != 0:  # same folder name (checkpoints are found by it), scratch place and store
        scratch = job / f"rank-{me}"
        out_dir = scratch / out_dir.name
        out_dir.mkdir(parents=True, exist_ok=True)
        config = config.model_copy(update={"tracking": config.tracking.model_copy(
            update={"uri": f"sqlite:///{scratch / 'mlflow.db'}"})})
    experiment = tracking.setup_tracking(config)
    run_id = request["run_id"] if me == 0 else mlflow.MlflowClient().create_run(experiment).info.run_id
    try:
        with mlflow.start_run(run_id=run_id):
            output = call_stage(stage, config, section, inputs, out_dir)
    except Exception as error:
        from alignflow.errors import USER_ERRORS

        if me == 0:
            (job / "error.json").write_text(json.dumps({"type": type(error).__name__, "message": str(error)}))
        if not isinstance(error, USER_ERRORS):  # a user error is the one line the pipeline prints
            traceback.print_exc()
        return 1
    if me == 0:
        (job / "result.json").write_text(json.dumps({"outputs": output.outputs, "metrics": output.metrics,
                                                     "summary": output.summary}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
