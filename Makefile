# kvlab — every target installs what it needs first (idempotent).
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
KVLAB := $(VENV)/bin/kvlab
LAB ?= default
RUNTIME ?= netns
PYTEST_ARGS ?=
BENCH_RUNS ?= 5
BENCH_MIGRATIONS ?= 10

.PHONY: help setup system-deps venv lab-up lab-down status test unit integration lint bench clean images

help:
	@echo "make lab-up      bring up labs/$(LAB).yml (LAB=..., RUNTIME=netns)"
	@echo "make test        lint + unit tests + netns integration tests on real BIRD"
	@echo "make lab-down    tear the lab down (and reap leftovers of crashed runs)"
	@echo "make bench       lab-up and QEMU live-migration benchmarks"

setup: system-deps venv

system-deps:
	@scripts/install-deps.sh
	@scripts/install-docker.sh

images: setup
	$(VENV)/bin/python -m harness.realstack.images tor

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@echo "==> Python environment in $(VENV)"
	@$(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install --quiet --upgrade pip
	@$(VENV)/bin/pip install --quiet --progress-bar off -e '.[dev]'
	@touch $@

lab-up: setup
	$(KVLAB) up $(LAB) --runtime $(RUNTIME)

lab-down: venv
	$(KVLAB) down $(LAB)

status: venv
	$(KVLAB) status

lint: venv
	$(VENV)/bin/ruff check harness tests bench scripts

unit: venv
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

integration: setup
	$(VENV)/bin/pytest tests/integration $(PYTEST_ARGS)

test: setup lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/python bench/bench_lab_up.py --runs $(BENCH_RUNS)
	$(VENV)/bin/python bench/bench_migration.py --migrations $(BENCH_MIGRATIONS)

clean: venv
	$(KVLAB) down --all
	rm -rf test-results kvlab-diagnostics .pytest_cache
