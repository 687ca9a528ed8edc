"""Stages, one module each, in topological order (a stage comes after everything it reads)."""

from alignflow.tasks import clean, pretrain

# (stage, its Prefect task); later issues append build, self_instruct, clean, sft, ...
PIPELINE = [
    (pretrain.STAGE, pretrain.pretrain_task),
    (clean.STAGE, clean.clean_task),
]
