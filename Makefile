# kvlab — every target installs what it needs first (idempotent).
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
KVLAB := $(VENV)/bin/kvlab
LAB ?= default
# NAME: the instance name (default: the lab file's name:), so several labs run side by side
NAME ?=
# the lab of status/lab-down: NAME if given, else LAB if given on the command line, else the only running lab
LAB_SEL = $(if $(NAME),$(NAME),$(if $(filter command line environment,$(origin LAB)),$(LAB)))
RUNTIME ?= netns
STACK ?= calico-3.32-kubevirt-1.8
PYTEST_ARGS ?=
QUICK ?=
COMPARE ?=

.PHONY: help setup system-deps venv lab-up lab-down status test unit integration lint bench clean images
.PHONY: setup-containerlab nightly nightly-test nightly-diag

help:
	@echo "make lab-up      bring up labs/$(LAB).yml (LAB=..., NAME=instance, RUNTIME=netns|containerlab, STACK=...)"
	@echo "make test        lint + unit tests + scenario and netns tests on real BIRD (+ Docker tests)"
	@echo "make lab-down    tear the lab down (LAB= or NAME=; and reap leftovers of crashed runs)"
	@echo "make bench       the scale-and-speed table against its goals (QUICK=1: a few minutes; COMPARE=REV: side by side)"
	@echo "make nightly     one nightly job: containerlab lab-up, tests, diagnostics, lab-down (LAB=, STACK=)"

setup: system-deps venv

system-deps:
	@scripts/install-deps.sh
	@scripts/install-docker.sh

images: setup
	$(KVLAB) image build tor

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@echo "==> Python environment in $(VENV)"
	@$(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install --quiet --upgrade pip
	@$(VENV)/bin/pip install --quiet --progress-bar off -e '.[dev]'
	@touch $@

# The containerlab runtime needs the venv and Docker; BIRD, QEMU and the guest image are netns's.
setup-containerlab: venv
	@scripts/install-docker.sh

lab-up: $(if $(filter containerlab,$(RUNTIME)),setup-containerlab,setup)
	$(KVLAB) up $(LAB)$(if $(NAME), --name $(NAME)) --runtime $(RUNTIME)$(if $(filter containerlab,$(RUNTIME)), --stack $(STACK))

lab-down: venv
	$(KVLAB) down $(LAB_SEL)

status: venv
	$(KVLAB) status $(LAB_SEL)

lint: venv
	$(VENV)/bin/ruff check harness tests bench scripts

unit: venv
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

# The scenario tests (on netns here), the netns runtime's own tests, the Docker ones.
integration: setup
	$(VENV)/bin/pytest tests/integration tests/netns tests/containerlab $(PYTEST_ARGS)

test: setup lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/python bench/run.py $(if $(QUICK),--quick) $(if $(COMPARE),--compare $(COMPARE))

clean: venv
	$(KVLAB) down --all
	rm -rf test-results kvlab-diagnostics .pytest_cache

# One job of .github/workflows/nightly.yml, the same steps: make nightly LAB=default STACK=<entry>
# (entries: python -m harness.runtime.containerlab.matrix_cli names). Diagnostics and lab-down run whatever
# happened; the exit status is the first failure's. Results in $(NIGHTLY_OUT).
NIGHTLY_OUT = test-results/nightly/$(LAB)-$(STACK)
NIGHTLY_TESTS_default = tests/integration --ignore=tests/integration/test_nested_clusters.py
NIGHTLY_TESTS_nested = tests/integration/test_nested_clusters.py
NIGHTLY_TESTS ?= $(or $(NIGHTLY_TESTS_$(LAB)),tests/integration)

nightly:
	@rc=0; \
	$(MAKE) --no-print-directory lab-up RUNTIME=containerlab && $(MAKE) --no-print-directory nightly-test || rc=$$?; \
	$(MAKE) --no-print-directory nightly-diag; \
	$(MAKE) --no-print-directory lab-down; \
	exit $$rc

nightly-test: venv
	$(VENV)/bin/pytest $(NIGHTLY_TESTS) --runtime containerlab --lab labs/$(LAB).yml --stack $(STACK) \
		--junitxml $(NIGHTLY_OUT)/junit.xml --kvlab-diag-dir $(NIGHTLY_OUT)/diagnostics $(PYTEST_ARGS)

nightly-diag: venv
	-$(KVLAB) diag $(LAB) --out $(NIGHTLY_OUT)/kvlab-diag
