# modelplane: the two commands the README promises are `make up` and `make test`.
# Everything they need is installed by the targets below; build outputs live outside git,
# under $(CACHE), keyed by version, so a second run only relinks.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CACHE ?= $(HOME)/.cache/modelplane
export MODELPLANE_CACHE := $(CACHE)

.DEFAULT_GOAL := help
.PHONY: help venv up down test lint unit runtime-tests integration generate check-generated

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# The virtual environment is rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@echo ">>> installing the Python environment into $(VENV) (a cold install downloads torch, several GB)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed ## install the Python environment (.venv)

lint: venv ## ruff, mypy and the import-linter layer contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: venv ## the fast tests: no cluster, no server process
	$(BIN)/pytest -m unit tests/unit

runtime-tests: venv ## the runtime tests: a real server process per module
	$(BIN)/pytest -m runtime tests/runtime

.PHONY: bench-runtime
bench-runtime: venv ## runtime benchmark, ours vs MLServer (BENCH_ARGS=--quick for a smoke run; bench/README.md)
	$(BIN)/python bench/runtime_bench.py $(BENCH_ARGS)

test: venv ## everything CI runs: lint, unit, runtime and integration tests
	$(MAKE) lint
	$(BIN)/pytest tests/unit tests/runtime

generate: venv ## regenerate crds/ from the pydantic API models
	$(BIN)/modelplane crd -o crds/modeldeployments.modelplane.dev.yaml
