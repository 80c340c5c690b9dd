# Development tasks. Needs python3, node + npm, make, and PostgreSQL (a running
# server, or initdb/pg_ctl for a throwaway one: see tests/support/postgres.py).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := graphile/node_modules/.installed
# The end-to-end tests (tests/e2e) drive the Airflow UI with playwright-core in Debian's
# chromium; playwright never downloads a browser of its own.
E2E_NODE_STAMP := tests/e2e/node_modules/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: venv node chromium e2e-deps lint test demo bench clean distclean

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[test]'
	touch $@

node: $(NODE_STAMP)

$(NODE_STAMP): graphile/package.json graphile/package-lock.json
	npm ci --prefix graphile --no-audit --no-fund
	touch $@

chromium:
	test -x $(CHROMIUM) || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

e2e-deps: chromium $(E2E_NODE_STAMP)

$(E2E_NODE_STAMP): tests/e2e/package.json tests/e2e/package-lock.json
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/e2e --no-audit --no-fund
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: venv node e2e-deps lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: venv node
	$(BIN)/python -m demo

# All benchmarks (minutes; see BENCHMARKS.md). BENCH_ARGS=--quick for smaller sizes.
BENCH_ARGS ?=
bench: venv node
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
	find . \( -path ./$(VENV) -o -path ./graphile/node_modules \) -prune \
		-o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) graphile/node_modules tests/e2e/node_modules
