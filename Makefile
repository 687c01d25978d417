# The two README commands are `make run` and `make test`; both install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install run test lint typecheck pytest bench clean

$(BIN)/bdi: pyproject.toml
	scripts/system-deps
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/bdi

run: install
	$(BIN)/bdi demo

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: install
	scripts/typecheck

# the whole suite twice: on SQLite (the embedded default), then on a throwaway PostgreSQL
# cluster the fixtures start (tests/pgcluster.py)
pytest: install
	scripts/system-deps --test
	$(BIN)/pytest
	BDI_TEST_DATABASE=postgresql $(BIN)/pytest

test: lint typecheck pytest

bench: install
	$(PY) bench/run.py

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
