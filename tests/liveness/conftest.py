"""Run the DAGs of tests/dags/graphile_liveness_runs.py for real."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.airflow_runs import DagRunResult
from tests.support.airflow_runs import run_dag as run


@pytest.fixture
def run_liveness_dag(airflow_db: None) -> Callable[..., DagRunResult]:
    """Run a DAG of tests/dags/graphile_liveness_runs.py with a conf."""
    from tests.dags.graphile_liveness_runs import DAGS, PARAMS

    def _run(dag_id: str, conf: dict[str, Any]) -> DagRunResult:
        return run(DAGS[dag_id], conf, PARAMS)

    return _run
