# `make run` and `make test` are the two commands a fresh Debian machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# `make image` tags the image as $(IMAGE).
IMAGE ?= localhost/mirror:latest
LOCK_VENV := .venv-lock
PIP_TOOLS := pip-tools==7.6.2
LOCK_FLAGS := --quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links

.PHONY: install run test test-fast lint typecheck system-deps clean bench lock image

# Exact versions with hashes (requirements-test.lock: the package's dependencies, its test extra and its
# build backend, constrained to requirements.lock, which the image installs), then the package itself.
$(STAMP): setup.cfg requirements-test.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements-test.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
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
	@scripts/install-helm >/dev/null || echo "helm could not be installed: the chart tests will skip"
	$(BIN)/pytest

# Refresh both locks to the newest versions setup.cfg allows (pip-tools in a venv of its own, so a lock
# that no longer matches setup.cfg can still be rebuilt); requirements.in adds what older Pythons need.
lock:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet $(PIP_TOOLS)
	$(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) --upgrade --output-file requirements.lock setup.cfg requirements.in
	$(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) --upgrade --extra test --constraint requirements.lock \
		--output-file requirements-test.lock setup.cfg requirements.in

# The container image (deploy/docker/Dockerfile) with podman or docker, whichever is installed. From the
# environment: BASE_IMAGE, EXTRA_CA (a CA bundle for the package index), PIP_INDEX_URL, BUILD_FLAGS.
image:
	scripts/build-image "$(IMAGE)"

# The edit-run loop: every tier but e2e (no real registry or clients), no lint or types. `make test` is the
# full suite.
test-fast: $(STAMP)
	$(BIN)/pytest --ignore=tests/e2e -q

# `make bench BENCH_FLAGS="--bigstore-blobs 1000000"`: any `python -m tests.bench` options (see its --help).
BENCH_FLAGS ?=
bench: $(STAMP)
	scripts/install-bench-deps
	$(BIN)/python -m tests.bench $(BENCH_FLAGS)
	$(BIN)/python -m tests.bench.shared --runs 1 > bench-results/shared.json

clean:
	rm -rf $(VENV) $(LOCK_VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
