# Mesh Lab's entry points. `make tour` and `make test` work on a fresh machine with only Python 3.11+ and make.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install tour test lint pytest test-unit test-mesh test-notebooks test-browser lab system-deps clean bench

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

## The lab's main job, headless, on the local backend: up, deploy, STRICT mTLS both ways, the 90/10 split measured.
tour: install
	$(BIN)/labkit tour --report artifacts/tour.html

## The whole suite: lint, types, unit + mesh + notebooks + browser tests.
test: install system-deps lint pytest

lint: install
	$(BIN)/ruff check labkit tests bench services
	$(BIN)/ruff format --check labkit tests bench services
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

## The suite in layers: unit (no Envoy, no notebooks: under a minute), the real-Envoy mesh, notebooks, browser.
test-unit: install
	$(BIN)/pytest -m "not mesh and not notebooks and not browser and not cluster"

test-mesh: install
	$(BIN)/pytest -m mesh

test-notebooks: install
	$(BIN)/pytest -m notebooks

test-browser: install system-deps
	$(BIN)/pytest -m browser

## Debian's Chromium: the browser tests and PNG export need it (Playwright and kaleido cannot download one here).
system-deps:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else echo "note: chromium not found and not root: browser tests will be skipped (sudo apt-get install chromium)"; fi

## JupyterLab on the notebooks.
lab: install
	$(BIN)/jupyter lab notebooks/

bench: install
	$(BIN)/python bench/bench_local.py
	$(BIN)/python bench/bench_traffic.py

clean:
	-$(BIN)/labkit down
	rm -rf .lab artifacts
