# fleetplane: `make run` starts a demo server, `make test` runs lint and the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint format clean bench bench-tools bench-quick fuzz

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/fleetplane db upgrade
	FLEETPLANE_PUBLIC_URL=$${FLEETPLANE_PUBLIC_URL:-http://$(HOST):$(PORT)} $(BIN)/fleetplane demo
	@echo "open http://$(HOST):$(PORT)/dashboard/observe (Ctrl+C stops the server)"
	FLEETPLANE_PUBLIC_URL=$${FLEETPLANE_PUBLIC_URL:-http://$(HOST):$(PORT)} $(BIN)/fleetplane serve --host $(HOST) --port $(PORT) --simulate 60

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

test: install lint
	$(BIN)/python -m pytest --cov --cov-report=term-missing:skip-covered --cov-fail-under=90

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .coverage

# The load generator is wrk from the distribution's packages (installed here when root on Debian).
bench-tools:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }; \
	  else echo "make bench needs wrk: sudo apt-get install wrk (or your system's package)"; exit 2; fi; }

bench: install bench-tools
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-quick: install bench-tools
	$(BIN)/python bench/run.py --quick

fuzz: install
	$(BIN)/python bench/fuzz.py $(FUZZ_ARGS)
