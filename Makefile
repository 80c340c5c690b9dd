# Development tasks. Needs python3, node + npm, make, and PostgreSQL (a running
# server, or initdb/pg_ctl for a throwaway one: see devkit/postgres.py).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := graphile/node_modules/.installed
# The end-to-end tests (tests/e2e) drive the Airflow UI with playwright-core in Debian's
# chromium; playwright never downloads a browser of its own. `make test` installs no system
# package: it only checks for chromium (the browser test fails without it), and
# `make chromium` (as root) installs it with apt-get.
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

e2e-deps: $(E2E_NODE_STAMP)
	@test -x $(CHROMIUM) || echo "note: $(CHROMIUM) is missing, so the browser test will fail;" \
		"'make chromium' (as root) installs Debian's chromium"

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
	rm -rf $(VENV) .venv-floor graphile/node_modules tests/e2e/node_modules

# The lowest Airflow pyproject.toml claims, tested: its own virtualenv with exactly that
# Airflow and Postgres provider, running the unit and hook tests, an operator through
# dag.test() and the trigger on one Graphile Worker version (a few minutes; no e2e).
# fastapi<0.137: Airflow 3.2 does not cap it and newer ones break its task execution API
# (Airflow's constraints file pins it; Airflow 3.3 caps it itself).
FLOOR_VENV := .venv-floor
FLOOR_PINS := apache-airflow==3.2.0 apache-airflow-providers-postgres==6.3.0 'fastapi<0.137'
FLOOR_GW := 0.18.0
FLOOR_TESTS := tests/unit tests/hooks tests/operators/test_complete_jobs_operator.py \
	tests/liveness/test_stuck_locks_trigger.py tests/liveness/test_dead_lockers_trigger.py

.PHONY: test-floor
test-floor: $(FLOOR_VENV)/.installed node
	$(FLOOR_VENV)/bin/python -m pytest -k "gw$(FLOOR_GW) or not gw" $(FLOOR_TESTS) $(PYTEST_ARGS)

$(FLOOR_VENV)/.installed: pyproject.toml Makefile
	test -x $(FLOOR_VENV)/bin/python || $(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install --disable-pip-version-check -q $(FLOOR_PINS) -e '.[test]'
	touch $@
