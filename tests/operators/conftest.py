"""Run the DAGs of tests/dags/graphile_operator_runs.py for real."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from devkit.dag_runs import DagRunResult
from devkit.dag_runs import run_dag as run


@pytest.fixture
def run_dag(airflow_db: None) -> Callable[..., DagRunResult]:
    """Run a DAG of tests/dags/graphile_operator_runs.py with a conf; return what happened."""
    from tests.dags.graphile_operator_runs import DAGS, PARAMS

    def _run(dag_id: str, conf: dict[str, Any]) -> DagRunResult:
        return run(DAGS[dag_id], conf, PARAMS)

    return _run
