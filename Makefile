# Developer entry points. `make setup` is the one set-up command of the README.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup test test-fast lint format run figures bench

setup:  ## create .venv and install the pinned requirements and qdesign itself
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "qdesign needs Python 3.11, got " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .

test:   ## the test suite (unit tests and small real workflow runs)
	$(BIN)/python -m pytest

test-fast:  ## the tests not marked slow (no Snakemake runs, no Slurm): a quick check while editing
	$(BIN)/python -m pytest -m "not slow"

lint:   ## every linter and formatter check CI runs; any finding fails
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/
	$(BIN)/snakemake --lint

format: ## apply ruff's and snakefmt's formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/snakefmt Snakefile workflow/

run:    ## the default study
	$(BIN)/snakemake --cores all

bench:  ## benchmarks (speed and overhead, printed as ratios); needs benchmarks/requirements.txt
	$(BIN)/pip install --quiet -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/run.py
