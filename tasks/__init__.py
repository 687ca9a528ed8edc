"""Stages, one module each, in topological order (a stage comes after everything it reads)."""

from alignflow.tasks import build, evaluate, pretrain, validate

# (stage, its Prefect task); data flow: build -> self_instruct -> clean -> validate
PIPELINE = [
    (pretrain.STAGE, pretrain.pretrain_task),
    (build.STAGE, build.build_task),
    (validate.STAGE, validate.validate_task),
    (evaluate.STAGE, evaluate.evaluate_task),  # keep last: it reads every model
]
