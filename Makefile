# Two commands do all the set-up on a fresh machine:
#   make run    set up, then the main job: pull (or regenerate) the default dataset, then the whole pipeline locally
#   make test   set up, then the test suite
# Set-up creates .venv and installs the project with the exact pins in constraints.txt.
# It is redone only when pyproject.toml or constraints.txt change.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data
RUN_DIR ?= runs/default
PYTEST_ARGS ?=
DEPS_HASH := $(shell cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(DEPS_HASH)
# pip repeats a harmless warning for every index location on some machines; keep the log readable
PIP_FILTER := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: setup run test bench lock clean help

help:
	@echo "make run    set up, pull or regenerate $(DATA)/, then run the whole pipeline locally (omniretriever pipeline run)"
	@echo "make test   set up, then run the tests"
	@echo "make bench  set up, then run the benchmarks under bench/"

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@echo "==> setting up $(VENV) (first time: a few minutes)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet torch==2.13.0 2>&1 | $(PIP_FILTER)
	@$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]' 2>&1 | $(PIP_FILTER)
	@$(BIN)/python -c "import torch, av, numpy; assert numpy.__version__ < '2', numpy.__version__"
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo "==> $(VENV) ready"

run: setup
	$(BIN)/omniretriever data pull $(DATA)
	$(BIN)/omniretriever pipeline run --data $(DATA)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/decode.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/validate.py
	$(BIN)/python bench/serving.py --model $(RUN_DIR) --data $(DATA)
	$(BIN)/python bench/search.py --model $(RUN_DIR)
	unshare -rn $(BIN)/python tests/netns.py $(BIN)/python bench/search_server.py --model $(RUN_DIR)

# Re-resolve the pins after changing pyproject.toml's ranges (needs the registries).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet torch==2.13.0 2>&1 | $(PIP_FILTER)
	.venv-lock/bin/python -m pip install --quiet -e '.[test]' 2>&1 | $(PIP_FILTER)
	{ echo "# Exact, tested resolution of pyproject.toml's dependencies (Python 3.11, CPU torch)."; \
	  echo "# Regenerate: make lock"; .venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^-e'; } > constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# The Kubeflow pipeline: compile the IR YAML; build (and push) the two component images.
# `images` needs a Docker engine: it puts the project wheel and pins into each build context, then
# lets `kfp component build` write kfp_config.ini and build with the Dockerfile there.
.PHONY: compile images
compile: setup
	$(BIN)/omniretriever pipeline compile

images: setup
	rm -rf components/dist components/gpu/dist
	$(BIN)/python -m pip wheel --quiet --no-deps -w components/dist .
	cp constraints.txt components/dist/
	cp -r components/dist components/gpu/dist
	$(BIN)/kfp component build components --component-filepattern '*.py' --push-image
	$(BIN)/kfp component build components/gpu --component-filepattern '*.py' --push-image
