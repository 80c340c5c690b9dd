# Development tasks. Needs python3, node + npm, make, and PostgreSQL (a running
# server, or initdb/pg_ctl for a throwaway one: see tests/support/postgres.py).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := graphile/node_modules/.installed

.PHONY: venv node lint test demo clean distclean

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[test]'
	touch $@

node: $(NODE_STAMP)

$(NODE_STAMP): graphile/package.json graphile/package-lock.json
	npm ci --prefix graphile --no-audit --no-fund
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: venv node lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: venv node
	$(BIN)/python -m demo

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
	find . \( -path ./$(VENV) -o -path ./graphile/node_modules \) -prune \
		-o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) graphile/node_modules
