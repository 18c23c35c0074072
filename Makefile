# hydralab — `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
DEMO_DATA ?= data/pvs

.DEFAULT_GOAL := help

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# Keep a torch the environment already has (a GPU machine's CUDA build); otherwise take the
	@# pinned CPU build from local disk, before the rest, so no multi-GB CUDA wheel is pulled.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed  ## Create .venv and install hydralab with its dev tools and optuna-dashboard

test: $(VENV)/.installed  ## Run the whole test suite (what CI runs)
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed  ## Run the tests without the slow end-to-end ones
	$(PY) -m pytest -q -m "not slow"

demo: $(VENV)/.installed  ## Train a baseline and a Hydranet model on built-in data, print both
	$(VENV)/bin/hydralab demo --data $(DEMO_DATA)

bench: $(VENV)/.installed  ## Time baseline vs Hydranet, data, memory and FLOP/s (one table)
	$(PY) benchmarks/bench.py

lint: $(VENV)/.installed  ## ruff check and format check
	$(VENV)/bin/ruff check hydralab tests benchmarks
	$(VENV)/bin/ruff format --check hydralab tests benchmarks

clean:  ## Remove the venv and run outputs
	rm -rf $(VENV) runs data

.PHONY: help install test test-fast demo bench lint clean
