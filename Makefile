# The entry point for people. Every target sets up what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -c requirements/constraints.txt
STAMP := $(VENV)/.installed
PERSONA ?= sarcasm
MODEL ?= smollm2
PYTEST_ARGS ?=
ORCHESTRATION_ARGS ?=  # e.g. --keep out/bench-runs to keep both runs' stores and reports
# Idle OpenMP threads spin by default; on a 2-core machine shared with servers that makes
# small-model work many times slower. Passive waiting costs nothing measurable when idle.
export OMP_WAIT_POLICY ?= PASSIVE
# On a 2-core machine torch gains nothing from its second thread (measured here: LoRA training
# steps the same, decoding 20% faster on one thread), and the other core stays free for the
# services and servers beside it.
ifeq ($(shell test "$$(nproc)" -le 2 && echo small),small)
export OMP_NUM_THREADS ?= 1
endif
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test test-fast lint bench proto images clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/lock.txt requirements/dev.txt requirements/nodeps.txt requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements/lock.txt -r requirements/dev.txt
	$(PIP) --no-deps -r requirements/nodeps.txt
	$(PIP) --no-deps -e .
	touch $@

setup: $(STAMP)  ## create .venv with pinned dependencies and the project (editable)

demo: setup  ## train and evaluate one persona on SmolLM2 at demo scale (CPU, ~20 min)
	$(BIN)/oct models prepare $(MODEL)
	$(BIN)/oct run $(PERSONA) --model $(MODEL) --scale demo

test: setup  ## the full test suite (starts its own S3 and gRPC servers on 127.0.0.1)
	$(BIN)/oct models prepare smollm2 >/dev/null
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: setup  ## unit tests only
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit $(PYTEST_ARGS)

lint: setup  ## ruff, mypy, buf lint, hadolint, helm lint/template + schema validation
	$(BIN)/ruff check libs services tests bench
	$(BIN)/mypy libs/character services --exclude services/api
	cd proto && ../$(BIN)/buf lint
	bash scripts/lint-deploy.sh

bench: setup  ## speed and memory figures for this machine
	$(BIN)/oct models prepare smollm2 >/dev/null
	$(BIN)/python bench/run_bench.py
	$(BIN)/python bench/orchestration.py $(ORCHESTRATION_ARGS)

proto: setup  ## regenerate the Python gRPC stubs from proto/
	bash scripts/gen-proto.sh

images:  ## build the CPU and GPU images (docker or podman)
	$${CONTAINER:-docker} build -f Dockerfiles/cpu.Dockerfile -t character:cpu .
	$${CONTAINER:-docker} build -f Dockerfiles/gpu.Dockerfile -t character:gpu .

clean:  ## remove the virtual environment and caches (not $$OCT_HOME)
	rm -rf $(VENV) .tools out .pytest_cache .ruff_cache .mypy_cache
