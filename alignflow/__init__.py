"""alignflow: a declarative, tracked pipeline for LLM post-training."""

__version__ = "0.1.0"
