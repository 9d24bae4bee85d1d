# The few verbs a Keel user needs. Every target installs what it needs into .venv first.
# Python 3.12 by default: the engine (Aegra, `make serve`) needs >= 3.12 and shares .venv with the
# tests; 3.11 and 3.13 are checked by `make pythons` (docs/python-versions.md).
PYTHON ?= python3.12
VENV   ?= .venv
BIN    := $(VENV)/bin
# Under pyenv, a pythonX.Y shim works only while that version is active: pick the newest
# installed X.Y for the interpreter named by PYTHON (nothing changes without pyenv).
PYENV_PY := $(shell pyenv versions --bare 2>/dev/null | grep "^$(patsubst python%,%,$(PYTHON))\." | tail -1)
WITH_PY  := $(if $(PYENV_PY),env PYENV_VERSION=$(PYENV_PY))
# Only for `make install-torch` (KEEL_EMBEDDING_BACKEND=torch): the CPU build of PyTorch, which
# pip takes from local disk on this project's machines; elsewhere set TORCH_SPEC (or
# PIP_EXTRA_INDEX_URL) to a CPU wheel. The default embeddings need no PyTorch.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.keel-installed
RUNTIME := $(VENV)/.keel-runtime
UV     := $(BIN)/uv
THREADS ?= 50

.PHONY: install install-runtime install-torch demo test lint typecheck docs notebooks unit clean \
	postgres redis serve scale-demo bench pythons

# Two steps, so that `make demo` waits only for what the demo runs: Keel and its runtime
# dependencies first (RUNTIME), the test, lint and engine tools on top (STAMP, `.[dev]`). Both go
# through uv, installed into the virtualenv by the interpreter's own pip: it resolves the same
# versions as pip, several times faster (docs/startup.md, "Installing"). Everything is byte-compiled at
# install, Keel's own packages too: where PYTHONDONTWRITEBYTECODE is set, nothing would be later,
# and every command would compile its modules again.
PACKAGES := keel graph agents retrieval tools observability stores evals domains

$(RUNTIME): pyproject.toml Makefile
	test -x $(UV) || { $(WITH_PY) $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet "uv>=0.9,<1"; }
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python -e .
	$(BIN)/python -m compileall -q $(PACKAGES)
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python -e ".[dev]"
	touch $(STAMP)

install-runtime: $(RUNTIME)

install: $(STAMP)

# Opt-in: all-MiniLM-L6-v2 on sentence-transformers and PyTorch (KEEL_EMBEDDING_BACKEND=torch).
# The CPU build of torch exists here for Python 3.11 only: a virtualenv of its own, .venv-torch.
TORCH_VENV ?= .venv-torch
install-torch:
	@$(MAKE) --no-print-directory install PYTHON=python3.11 VENV=$(TORCH_VENV)
	$(TORCH_VENV)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(TORCH_VENV)/bin/pip install --quiet -e ".[torch]"

demo: install-runtime
	$(BIN)/keel demo

# PostgreSQL's server programs, for the Postgres tests and the scale demo (no server is started
# here: each test session and demo runs its own throwaway cluster). Debian/Ubuntu as root: apt-get.
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "PostgreSQL server programs: found" >&2; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	else \
		echo "install PostgreSQL's server (initdb, pg_ctl), e.g. sudo apt-get install postgresql" >&2; \
		exit 1; \
	fi

# Redis, the engine's job queue (`make serve`, the scale demo, the engine's test). As root on
# Debian/Ubuntu: apt-get, as for PostgreSQL.
redis:
	@if command -v redis-server >/dev/null 2>&1; then \
		echo "redis-server: found" >&2; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	else \
		echo "install Redis (redis-server), e.g. sudo apt-get install redis-server" >&2; \
		exit 1; \
	fi

# Keel on the engine: PostgreSQL, Redis, a Chroma server, an Aegra API process and WORKERS Aegra
# worker processes (default 2) on free loopback ports; prints the URL and a bearer token per
# user. Ctrl-C stops everything it started.
WORKERS ?= 2
serve: postgres redis
	@$(MAKE) --no-print-directory install >&2
	@$(BIN)/python -m keel.serve --workers $(WORKERS)

# 50 threads (THREADS=N) through the LangGraph SDK on the engine (2 Aegra processes), each
# approved by a second client, one process SIGKILLed mid-run. JSON=1 prints one JSON object.
scale-demo: postgres redis
	@$(MAKE) --no-print-directory install >&2
	@$(BIN)/python -m evals.scale_demo --threads $(THREADS) $(if $(JSON),--json) $(if $(OUT),--out $(OUT))

# Every benchmark, several minutes (a 10,000-chunk index; a throwaway PostgreSQL for the checkpoint
# bench): the headline figures against their targets, then each bench's numbers.
# JSON=1 prints one JSON object instead (install's output goes to stderr).
bench: postgres
	@$(MAKE) --no-print-directory install >&2
	@$(BIN)/keel bench $(if $(JSON),--json) $(if $(OUT),--out $(OUT))

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# The docs site (mkdocs.yml), built strictly into a temporary folder: a broken link or anchor, a
# page missing from the nav or a snippet that is not there fails it. A few seconds; the notebooks
# are rendered with their committed outputs, not executed (docs/notebooks.md says why).
docs: install
	@site=$$(mktemp -d) && NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict \
		--site-dir "$$site"; status=$$?; rm -rf "$$site"; exit $$status

# Execute both notebooks in place, so their outputs and plots are committed with them (about two
# minutes); tests/unit/test_docs.py fails when a notebook's code changed since.
notebooks: install
	$(BIN)/python docs/execute_notebooks.py

# PostgreSQL's server programs and Redis are installed when missing (as root, with apt-get); where
# they cannot be, their tests skip and say how to run them, except under CI=true, where they fail.
test: lint typecheck docs
	-@$(MAKE) --no-print-directory postgres
	-@$(MAKE) --no-print-directory redis
	$(BIN)/pytest

# Python 3.11 and 3.13 beside the default 3.12: for each, a virtualenv of its own (.venv311,
# .venv313), the demo end to end and the unit tests. A few minutes with a warm pip cache, most of it
# installing, so it is not part of `make test` (docs/python-versions.md). Under pyenv, each
# interpreter is found even when another version is the active one.
PYTHONS ?= 3.11 3.13
pythons:
	@for v in $(PYTHONS); do \
		venv=.venv$$(echo $$v | tr -d .); \
		pv=$$(pyenv versions --bare 2>/dev/null | grep "^$$v\." | tail -1); \
		echo "== Python $$v ($$venv)" >&2; \
		env $${pv:+PYENV_VERSION=$$pv} $(MAKE) --no-print-directory install demo PYTHON=python$$v \
			VENV=$$venv >/dev/null || exit 1; \
		$$venv/bin/python --version && $$venv/bin/pytest tests/unit -q -p no:cacheprovider || exit 1; \
	done

unit: install
	$(BIN)/pytest tests/unit

clean:
	rm -rf $(VENV) .venv311 .venv312 .venv313 .venv-torch .keel .pytest_cache .mypy_cache .ruff_cache
