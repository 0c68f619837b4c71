# unetgeo — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= demo
PYTEST_ARGS ?=

.PHONY: install demo test test-all test-gpu lint bench clean

# Idempotent: re-running only re-installs when pyproject.toml or constraints.txt changed.
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

demo: install
	PREFECT_LOGGING_EXTRA_LOGGERS=unetgeo $(BIN)/python -m flows.demo --out $(OUT)

test: install
	PREFECT_LOGGING_EXTRA_LOGGERS=unetgeo $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-all: install
	$(BIN)/python -m pytest -q -m "not gpu" $(PYTEST_ARGS)

test-gpu: install
	$(BIN)/python -m pytest -q -m gpu $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check unetgeo flows tests benchmarks

bench: install
	$(BIN)/python benchmarks/tiling.py
	$(BIN)/python benchmarks/inference.py

clean:
	rm -rf $(VENV) demo bench_out .pytest_cache .ruff_cache
