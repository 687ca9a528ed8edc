"""The stages, one module each: a typed function decorated with alignflow.pipeline.stage.stage.
flows/pipeline.py wires them; no stage imports another."""
