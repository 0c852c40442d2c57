# One entry point for people and CI.  `make preview` and `make test` work on a fresh
# Debian machine: they create .venv and install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# checkov and zizmor, in a virtualenv of their own (requirements-scanners.txt).
SCANNERS := .venv-scanners
STACK ?= dev
STACKS ?= dev staging prod
BASE ?=
POLICY_CONFIG ?=
# The oldest Python the project runs on (scripts/bootstrap.sh says the same).
MIN_PYTHON := 3.11

.PHONY: help preview preview-all capacity crds images scanners test check test-fast system-deps diff clean FORCE
.DEFAULT_GOAL := help

## help: list the targets (the default)
help:
	@awk '/^## / { sub(/^## /, ""); i = index($$0, ": "); printf "  make %-14s %s\n", substr($$0, 1, i - 1), substr($$0, i + 2) }' $(MAKEFILE_LIST)

# A .venv whose interpreter is missing or older than MIN_PYTHON is rebuilt whatever its
# stamps say (bootstrap.sh recreates it).
ifneq ($(shell $(PY) -c 'import sys; print(sys.version_info >= tuple(map(int, "$(MIN_PYTHON)".split("."))))' 2>/dev/null),True)
$(VENV)/.runtime: FORCE
endif
FORCE:

$(VENV)/.runtime: requirements.txt pyproject.toml
	scripts/bootstrap.sh $(PYTHON) $(VENV) requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt $(VENV)/.runtime
	scripts/bootstrap.sh $(PYTHON) $(VENV) requirements-dev.txt
	touch $@

$(SCANNERS)/.installed: requirements-scanners.txt
	scripts/bootstrap.sh $(PYTHON) $(SCANNERS) requirements-scanners.txt
	touch $@

## scanners: checkov and zizmor into .venv-scanners/ (make test runs them)
scanners: $(SCANNERS)/.installed

## preview: offline preview of STACK (default dev) into build/STACK/
# `python -m preview` exits 0/1/2/3 (README); make reports any non-zero as its own exit 2
# with a trailing `make: *** ...` line, so scripts that need the code run the command itself.
preview: $(VENV)/.runtime
	@$(PY) -m preview --stack $(STACK) $(if $(POLICY_CONFIG),--policy-config $(POLICY_CONFIG))

## preview-all: offline preview of dev, staging and prod
preview-all: $(VENV)/.runtime
	@rc=0; for s in $(STACKS); do $(PY) -m preview --stack $$s $(if $(POLICY_CONFIG),--policy-config $(POLICY_CONFIG)) || rc=$$?; done; exit $$rc

## capacity: the preview of STACK plus the capacity model (time series, plot) into build/STACK/capacity/
capacity: $(VENV)/.dev
	@$(PY) -m preview capacity --stack $(STACK)

## diff: offline diff of STACKS between BASE (default: merge-base with main) and the working tree, into build/diff/
diff: $(VENV)/.runtime
	@$(PY) -m preview diff $(if $(BASE),--base $(BASE)) --stacks "$(STACKS)"

## system-deps: Debian daemons the integration tests run (installed when missing)
system-deps:
	scripts/install-system-deps.sh

## crds: the pinned CRD files into .crds/ (or check the mirror TIKIT_CRDS_DIR names)
crds: $(VENV)/.runtime
	@$(PY) -m preview crds

## images: compare the image pins of tikit/images.py with their registries (needs the registries; WRITE=1 updates them)
images: $(VENV)/.runtime
	@$(PY) -m preview images $(if $(WRITE),--write)

## test: the whole suite, integration tests included, on every core
test: $(VENV)/.dev $(SCANNERS)/.installed system-deps crds
	$(PY) -m pytest -n auto

## check: the fast tier: no daemons, no slow end-to-end runs
check: $(VENV)/.dev crds
	$(PY) -m pytest -n auto -m "not integration and not slow"

## test-fast: everything but the daemons
test-fast: $(VENV)/.dev crds
	$(PY) -m pytest -n auto -m "not integration"

## clean: remove build/ and the test caches
clean:
	rm -rf build .pytest_cache .hypothesis
