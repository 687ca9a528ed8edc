# Two commands for a newcomer: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel on this kind of machine; on a GPU machine use e.g. TORCH_SPEC="torch==2.13.0" with
# the CUDA index of your choice, or install torch yourself first and pass TORCH_SPEC="".
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.alignflow-installed

.PHONY: install demo icl test test-fast lint ui clean-runs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -m pip install -q "$(TORCH_SPEC)"; fi
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/alignflow run configs/demo.yaml

# In-context learning alone (chapter 1): many-shot k up to 64 and accuracy against model size.
icl: install
	$(BIN)/alignflow run configs/icl.yaml

test: install lint
	$(BIN)/python -m pytest

# The unit tests only (no end-to-end runs, no spawned pipelines): for the edit-test loop.
test-fast: install lint
	$(BIN)/python -m pytest -m "not slow" -q

lint: install
	$(BIN)/ruff check .

ui: install
	$(BIN)/alignflow ui

# Forget every run, cached stage and artifact of this project folder.
clean-runs:
	rm -rf mlruns/mlflow.db mlruns/artifacts artifacts .alignflow
