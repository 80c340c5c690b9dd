"""Run the example DAGs (example_dags/) for real, with the run's conf over their params,
against the test database (`gw_db`) through their connection graphile_worker_default."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from devkit.dag_runs import DagRunResult, load_example_dag, param_defaults, run_dag
from devkit.graphile import GraphileDB

DEFAULT_CONN_ID = "graphile_worker_default"


@pytest.fixture
def run_example(
    airflow_db: None, gw_db: GraphileDB, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., DagRunResult]:
    """Run an example DAG by file name with a conf; its connection points at `gw_db`."""
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection(gw_db.conn_id)
    monkeypatch.setenv(f"AIRFLOW_CONN_{DEFAULT_CONN_ID.upper()}", connection.as_json())

    def _run(name: str, conf: dict[str, Any]) -> DagRunResult:
        dag = load_example_dag(name)
        return run_dag(dag, conf, param_defaults(dag))

    return _run
