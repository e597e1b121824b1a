# `make run` and `make test` are the two commands a fresh Debian machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint typecheck system-deps clean bench

$(STAMP): setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/mirror serve

system-deps:
	scripts/install-system-deps

lint: $(STAMP)
	$(BIN)/ruff check mirror tests
	$(BIN)/ruff format --check mirror tests

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) system-deps lint typecheck
	$(BIN)/pytest

# The edit-run loop: every tier but e2e (no real registry or clients), no lint or types. `make test` is the
# full suite.
test-fast: $(STAMP)
	$(BIN)/pytest --ignore=tests/e2e -q

bench: $(STAMP)
	scripts/install-bench-deps
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
