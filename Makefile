# The quick start: `make run` (set up, answer a prompt with the bundled model) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# LLAMA_CPP=1 builds the optional llama.cpp backend too (see README, Backends).
LLAMA_CPP ?= 0

.PHONY: setup run test test-all lint bench
setup:
	@LLAMA_CPP=$(LLAMA_CPP) bash scripts/setup.sh

run: setup
	$(PY) -m omnirun $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	$(PY) benchmarks/load_time.py
