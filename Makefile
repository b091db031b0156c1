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
.PHONY: help venv up down test lint unit runtime-tests integration generate check-generated controlplane

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
	$(MAKE) integration

# Every generated file, in dependency order (tests/tools/generate.py): crds/ from the pydantic API
# models, the chart's CRD templates from crds/, the Argo CD argocd-cm patch from
# charts/argocd/modeldeployment-health.lua, and charts/install.yaml (helm template of the chart).
# Unit tests fail while any of them is stale.
.PHONY: helm manifests
generate: venv ## regenerate everything generated: crds/, the chart's CRD templates, install.yaml, Argo CD snippet
	$(BIN)/python -m tests.tools.generate

manifests: generate ## the same as generate (its former name)

helm: venv ## build or reuse helm and the kstatus checker (tests/tools) in $(CACHE)
	$(BIN)/python -m tests.tools.binaries

# The local control plane (tests/controlplane/README.md): built from pinned Go modules into $(CACHE),
# run by `modelplane devcluster` with its state (PKI, kubeconfigs, logs) in $(DEVCLUSTER_DIR).
DEVCLUSTER_DIR ?= .devcluster
DEVCLUSTER = $(BIN)/modelplane devcluster
DEVKUBECTL = $(DEVCLUSTER) kubectl --dir $(DEVCLUSTER_DIR) --
UP_EXAMPLES = $(firstword $(wildcard examples/cpu-quickstart*.yaml examples/*quickstart*.yaml)) \
	$(firstword $(wildcard examples/gpu-single*.yaml examples/*gpu*.yaml))

controlplane: venv ## build or reuse etcd, kube-apiserver, -controller-manager, -scheduler, kwok
	$(DEVCLUSTER) build

integration: venv $(if $(KUBECONFIG),,controlplane) ## integration tests on KUBECONFIG's cluster, else on a local one
	$(BIN)/pytest -m integration tests/integration

up: venv controlplane ## local control plane, CRDs, the operator and two examples, then wait for Ready
	$(DEVCLUSTER) up --dir $(DEVCLUSTER_DIR)
	@ls crds/*.yaml >/dev/null 2>&1 || { echo "crds/ has no CRDs: run make generate"; exit 1; }
	$(DEVKUBECTL) apply --server-side --force-conflicts -f crds/
	$(DEVKUBECTL) wait --for=condition=Established --timeout=60s -f crds/
	$(DEVCLUSTER) start-operator --dir $(DEVCLUSTER_DIR)
	@test -n "$(strip $(UP_EXAMPLES))" || { echo "examples/ has no quickstart or GPU example"; exit 1; }
	$(DEVKUBECTL) apply $(addprefix -f ,$(UP_EXAMPLES))
	$(DEVKUBECTL) wait --for=condition=Ready mdep --all -A --timeout=300s
	@$(DEVKUBECTL) get mdep -A
	@echo; echo "The cluster keeps running; use it with:"; $(DEVCLUSTER) env --dir $(DEVCLUSTER_DIR)
	@echo "make down stops the operator and the control plane."

down: ## stop what make up started (the operator and the local control plane)
	@if [ -x $(BIN)/modelplane ]; then $(DEVCLUSTER) down --dir $(DEVCLUSTER_DIR); fi
