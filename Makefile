# Two commands a newcomer needs: `make run` and `make test`. Both bootstrap the machine first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test setup lint bench-latency call

setup:
	@bash scripts/bootstrap.sh

run: setup
	$(VENV)/bin/switchboard up

# The suite waits on real-time calls more than it computes: two pytest-xdist workers, each taking
# whole modules (tests/module_order.py), use both cores. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench-latency: setup
	$(PY) benchmarks/latency_single_call.py
