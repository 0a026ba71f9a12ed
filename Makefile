# Two commands a newcomer needs: `make run` and `make test`. Both bootstrap the machine first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test setup lint bench-latency call

setup:
	@bash scripts/bootstrap.sh

run: setup
	$(VENV)/bin/switchboard up

test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench-latency: setup
	$(PY) benchmarks/latency_single_call.py
