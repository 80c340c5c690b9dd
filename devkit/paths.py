"""Where things are in the repository."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DAGS_DIR = REPO_ROOT / "example_dags"
# The DAGs the tests run for real (tests/dags).
TEST_DAGS_DIR = REPO_ROOT / "tests" / "dags"
# The Graphile Worker versions under test, as npm aliases (graphile/package.json).
GRAPHILE_DIR = REPO_ROOT / "graphile"
# The heartbeat plugin (a Node.js package).
WORKER_PLUGIN_DIR = REPO_ROOT / "worker-plugin"
# The workers' working folder: Graphile Worker loads its task files from ./tasks.
GRAPHILE_TASKS_DIR = Path(__file__).resolve().parent / "graphile_tasks"
