# gwms-cloud developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages the test suite drives for real (see README "What the tests need").
SYSTEM_PACKAGES ?= globus-proxy-utils openssl libfaketime packer
PYTEST_ARGS ?=

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

.PHONY: test
test: system-deps venv ## Install everything the tests need, then lint and run the whole suite
	$(BIN)/ruff check .
	$(BIN)/yamllint -s .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

.PHONY: molecule
molecule: venv ## Every role's Molecule scenario and the site playbook in podman (root; 30+ min)
	tests/molecule/setup-host.sh
	tests/molecule/run-all.sh
	$(BIN)/python -m pytest -m molecule $(PYTEST_ARGS)

.PHONY: image-test
image-test: venv ## Build the qemu image with Packer and boot it (root; 15+ min under TCG)
	$(MAKE) system-deps SYSTEM_PACKAGES="packer qemu-system-x86 qemu-utils debootstrap e2fsprogs xorriso"
	$(BIN)/python -m pytest -m image_build $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: venv ## Only the fast tests (no slow, integration or e2e)
	$(BIN)/python -m pytest -m 'not slow and not integration and not e2e' $(PYTEST_ARGS)

.PHONY: clean
clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
