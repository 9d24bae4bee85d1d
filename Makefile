# The few verbs a Keel user needs. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of PyTorch for the local embedding model. On this project's machines pip takes it
# from local disk; elsewhere set TORCH_SPEC (or PIP_EXTRA_INDEX_URL) to get a CPU wheel.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.keel-installed

.PHONY: install demo test lint typecheck unit clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/keel demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

unit: install
	$(BIN)/pytest tests/unit

clean:
	rm -rf $(VENV) .keel .pytest_cache .mypy_cache .ruff_cache
