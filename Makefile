# gwms-cloud developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages the tests drive for real (see README "What the tests need"): proxy tools,
# libfaketime, Packer, and what the image build and boot need (qemu, debootstrap, xorriso).
# Podman and its settings come from tests/molecule/setup-host.sh.
SYSTEM_PACKAGES ?= globus-proxy-utils openssl libfaketime packer \
	qemu-system-x86 qemu-utils debootstrap e2fsprogs xorriso
PYTEST_ARGS ?=
# The suites `make test` runs side by side (tests/run-suites.sh): suite, molecule, image.
SUITES ?= molecule image suite

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: system-deps
system-deps: ## Install the Debian packages the tests need (root or sudo)
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml requirements-ansible.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev,demo]'
	$(BIN)/python -m pip install -q -r requirements-ansible.txt
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create the virtualenv with gwms and its test tools

.PHONY: demo
demo: venv ## Run the local end-to-end demo
	$(BIN)/gwms demo

.PHONY: lint
lint: venv ## ruff and yamllint over the whole tree (ansible-lint runs in the tests)
	$(BIN)/ruff check .
	$(BIN)/yamllint -s .

.PHONY: host-deps
host-deps: system-deps ## Debian packages, podman and its containers.conf (root or sudo)
	tests/molecule/setup-host.sh

.PHONY: test
test: host-deps venv ## Install everything, lint, then run every suite side by side (root; ~20 min)
	$(BIN)/ruff check .
	$(BIN)/yamllint -s .
	VENV=$(VENV) PYTEST_ARGS='$(PYTEST_ARGS)' tests/run-suites.sh $(SUITES)

.PHONY: molecule
molecule: host-deps venv ## Only every role's Molecule scenario and site.yml in podman (root; ~8 min)
	VENV=$(VENV) PYTEST_ARGS='$(PYTEST_ARGS)' tests/run-suites.sh molecule

.PHONY: image-test
image-test: host-deps venv ## Only the qemu image build with Packer and its boots (root; ~8 min, +5 the first time)
	VENV=$(VENV) PYTEST_ARGS='$(PYTEST_ARGS)' tests/run-suites.sh image

.PHONY: test-fast
test-fast: venv ## Only the fast tests (no slow, integration or e2e)
	$(BIN)/python -m pytest -m 'not slow and not integration and not e2e' $(PYTEST_ARGS)

.PHONY: clean
clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
